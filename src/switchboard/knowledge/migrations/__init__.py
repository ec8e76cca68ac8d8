"""Alembic migrations of the AI server's database; run by `database.migrate()`, never by hand-written SQL."""
