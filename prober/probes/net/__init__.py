"""What the probes share on the wire: request rendering, redirect guarding, TLS."""
