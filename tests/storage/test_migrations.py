"""Migrations: they apply to an empty database, twice is a no-op, and they create exactly the models' schema."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from mcp_bastion.errors import ConfigError
from mcp_bastion.storage import migrate
from mcp_bastion.storage.db import Database
from mcp_bastion.storage.models import Base
from tests.storage.support import sqlite_url

pytestmark = pytest.mark.anyio

HEAD = "0008_page_keys"


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


def _diff(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True, "render_as_batch": True})
    return list(compare_metadata(context, Base.metadata))


async def test_migrations_apply_from_empty_and_twice_is_a_no_op(tmp_path: Path) -> None:
    db = Database(sqlite_url(tmp_path / "bastion.db"))
    try:
        assert await db.revision() is None
        await db.upgrade()
        assert await db.revision() == HEAD
        await db.upgrade()
        assert await db.revision() == HEAD
        async with db.read() as connection:
            tables = await connection.run_sync(_tables)
        assert tables == set(Base.metadata.tables) | {"alembic_version"}
    finally:
        await db.aclose()


async def test_migrations_create_exactly_the_models(database: Database) -> None:
    async with database.read() as connection:
        assert await connection.run_sync(_diff) == []


async def test_downgrade_to_base_leaves_nothing(database: Database) -> None:
    def downgrade(connection: Connection) -> set[str]:
        command.downgrade(migrate.config(connection), "base")
        return _tables(connection)

    async with database.transaction() as connection:
        assert await connection.run_sync(downgrade) == {"alembic_version"}


async def test_a_database_from_a_newer_version_is_refused(database: Database) -> None:
    async with database.transaction() as connection:
        await connection.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    with pytest.raises(ConfigError, match="cannot migrate"):
        await database.upgrade()


async def test_a_failed_migration_leaves_no_half_schema(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DDL is transactional on SQLite too (SQLAlchemy emits BEGIN, not the driver's legacy mode)."""

    def broken(connection: Connection) -> None:
        connection.execute(text("CREATE TABLE half (id INTEGER)"))
        raise RuntimeError("migration failed half-way")

    monkeypatch.setattr(migrate, "upgrade", broken)
    db = Database(sqlite_url(tmp_path / "bastion.db"))
    try:
        with pytest.raises(RuntimeError):
            await db.upgrade()
        async with db.read() as connection:
            assert await connection.run_sync(_tables) == set()
    finally:
        await db.aclose()


async def test_tool_pins_of_0005_become_tool_pins_of_every_kind(database: Database) -> None:
    """0006 keeps existing pins: ids gain the kind, a quarantined pin says it was a change."""
    sep = "\x1f"

    def back_to_0005_with_pins(connection: Connection) -> None:
        command.downgrade(migrate.config(connection), "0005_tool_pins")
        for name, state in (("greet", "approved"), ("pulled", "quarantined")):
            connection.execute(
                text(
                    "INSERT INTO tool_pins (id, server, name, digest, definition, state, first_seen)"
                    " VALUES (:id, 's', :name, 'd', '{}', :state, 0)"
                ),
                {"id": f"s{sep}{name}", "name": name, "state": state},
            )
        command.upgrade(migrate.config(connection), "head")

    async with database.transaction() as connection:
        await connection.run_sync(back_to_0005_with_pins)
    async with database.read() as connection:
        rows = (await connection.execute(text("SELECT id, kind, reason FROM tool_pins ORDER BY name"))).all()
    assert [tuple(row) for row in rows] == [
        (f"tool{sep}s{sep}greet", "tool", None),
        (f"tool{sep}s{sep}pulled", "tool", "changed"),
    ]
