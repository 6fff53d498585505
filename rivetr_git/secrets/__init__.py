"""Secrets at rest: AES-256-GCM values under the master key, the key file, rotation."""
