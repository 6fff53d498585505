"""After the switch: the watch window and auto-rollback, the crash monitor, image pruning."""
