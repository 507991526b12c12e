"""Benchmarks of prober against blackbox_exporter: `make bench` (see bench/run.py)."""
