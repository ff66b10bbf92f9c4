"""Alembic's environment: migrate (or compare with the models) the connection ``storage.migrate`` hands over.

``render_as_batch``: SQLite cannot ALTER most things in place; batch mode copies the table instead, and
the models' naming convention gives every constraint the name batch mode needs to find it again.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from mcp_bastion.storage.models import Base


def _migrate(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def _run() -> None:
    connection: Connection | None = context.config.attributes.get("connection")
    if connection is None:
        raise SystemExit("mcp-bastion runs its migrations itself: see mcp_bastion.storage.migrate")
    _migrate(connection)


_run()
