"""The HTTP face: /metrics, /status, /api/status, lifecycle, web config (TLS, auth)."""
