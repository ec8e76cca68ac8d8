"""Alembic environment: always online, on the connection `database.migrate()` hands over."""

from __future__ import annotations

from alembic import context

from switchboard.state.models import Base

VERSION_TABLE = "voice_state_alembic_version"

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
