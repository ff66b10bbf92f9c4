"""Alembic, run programmatically on a connection the caller already holds (no ``alembic.ini``).

The scripts live in ``storage/migrations/`` inside the package, so an installed wheel migrates its own
database at startup. Each function takes a synchronous ``Connection`` (from ``AsyncConnection.run_sync``)
that is already inside a transaction: on SQLite and PostgreSQL the DDL of a migration commits or rolls
back as a whole, and two processes starting at once take turns on the write lock.

Developers write a new revision after changing ``models`` with::

    python -c 'from mcp_bastion.storage.migrate import new_revision; new_revision("what changed")'

which autogenerates it against a scratch SQLite database at the current head (review it: autogenerate
misses renames). ``tests/storage/test_migrations.py`` fails while models and migrations disagree.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script.revision import ResolutionError
from alembic.util.exc import CommandError
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection

from mcp_bastion.errors import ConfigError
from mcp_bastion.storage.db import MIGRATIONS


def config(connection: Connection | None = None) -> Config:
    """An alembic configuration for the packaged scripts; ``env.py`` uses ``connection`` when given."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("file_template", "%%(rev)s")  # new_revision's ids are "NNNN_message" already
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(connection: Connection) -> None:
    """Apply every migration newer than the database's revision."""
    try:
        command.upgrade(config(connection), "head")
    except (CommandError, ResolutionError) as exc:
        # Typically a database written by a newer mcp-bastion: refuse to guess at its schema.
        raise ConfigError(f"cannot migrate the database: {exc}") from exc


def current(connection: Connection) -> str | None:
    """The revision recorded in the database (None when it was never migrated)."""
    return MigrationContext.configure(connection).get_current_revision()


def new_revision(message: str) -> None:
    """Autogenerate ``versions/NNNN_<message>.py`` from the difference between ``models`` and the head."""
    number = len(list((MIGRATIONS / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))) + 1
    rev_id = f"{number:04d}_" + "_".join(message.lower().split())
    with tempfile.TemporaryDirectory() as scratch:
        engine = create_engine(f"sqlite:///{Path(scratch) / 'scratch.db'}")
        try:
            with engine.begin() as connection:
                command.upgrade(config(connection), "head")
                command.revision(config(connection), message=message, autogenerate=True, rev_id=rev_id)
        finally:
            engine.dispose()
