"""HTTPS: certificates (uploaded, ACME, self-signed fallback), SNI selection, renewal."""
