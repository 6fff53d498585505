"""The command line: one parser (parse.py), the local entry point (main.py), client mode
(remote.py decides, client.py connects over SSH with paramiko)."""
