"""Probes: one module per kind, each `async def run(check, ctx) -> Outcome` (see registry.py)."""
