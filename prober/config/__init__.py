"""Config: read YAML with lines, substitute, validate, resolve into a frozen model."""
