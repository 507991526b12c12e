"""prober: a synthetic API health probe that measures platform-wide API degradation."""

__version__ = "0.1.0"
