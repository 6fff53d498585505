"""Container runtimes: the interface the pipeline speaks, and its implementations."""
