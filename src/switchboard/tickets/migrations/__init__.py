"""Alembic migrations of the App server; run programmatically by `database.run_migrations`."""
