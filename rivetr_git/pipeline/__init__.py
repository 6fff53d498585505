"""The deploy pipeline: a queue per app, and one module per stage."""
