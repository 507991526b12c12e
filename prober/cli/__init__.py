"""The `prober` command: its subcommands, serving until a signal, one-shot traces, the demo."""
