"""Where Results go: metrics, status and verdict, structured log lines."""
