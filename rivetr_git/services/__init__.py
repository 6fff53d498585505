"""Backing services (Postgres, Redis, MariaDB) next to the apps: private, linked, backed up."""
