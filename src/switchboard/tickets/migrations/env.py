"""Alembic environment: migrations run on the connection `database.run_migrations` hands over.

There is no alembic.ini: the configuration is built in code so the migrations ship in the wheel.
"""

from __future__ import annotations

from alembic import context

from switchboard.tickets.integrations import models as _integration_tables  # noqa: F401 - registers the tables
from switchboard.tickets.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
