"""Admin verbs shared by the SSH session, the local CLI and client mode."""
