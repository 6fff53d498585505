"""Everything the server keeps on disk: the SQLite database (apps, deployments, logs, keys,
encrypted env tables, migrations) and the bare git repositories."""
