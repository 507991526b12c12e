"""Network clients the probes share: TLS contexts and handshakes."""
