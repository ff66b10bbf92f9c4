"""The database edge: URLs, the private file, SQLite settings, transactions, and failing closed."""

from __future__ import annotations

import importlib.util
import os
import stat
from pathlib import Path

import anyio
import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.exc import IntegrityError

from mcp_bastion.errors import ConfigError, Unavailable
from mcp_bastion.settings import Settings, StorageSettings, UpstreamSettings
from mcp_bastion.storage.db import BUSY_TIMEOUT_MS, Database, default_url
from mcp_bastion.storage.models import UserRow
from mcp_bastion.storage.oauthstore import SQLOAuthStore
from tests.storage.support import migrated, sqlite_url
from tests.storage.test_migrations import HEAD

pytestmark = pytest.mark.anyio


def settings(tmp_path: Path, url: str | None = None) -> Settings:
    return Settings(
        server={"state_dir": tmp_path / "state"},
        storage=StorageSettings(url=url),
        upstreams={"demo": UpstreamSettings(url="https://demo.example/mcp")},
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def user_row(user_id: str, username: str) -> dict[str, object]:
    return {
        "id": user_id,
        "username": username,
        "password_hash": "$argon2id$not-a-real-hash",
        "roles": [],
        "disabled": False,
        "created_at": 1.0,
        "updated_at": 1.0,
    }


# URLs.


def test_default_url_is_a_file_in_the_state_dir(tmp_path: Path) -> None:
    assert default_url(settings(tmp_path)) == f"sqlite+aiosqlite:///{tmp_path / 'state' / 'bastion.db'}"
    assert default_url(settings(tmp_path, "postgresql+asyncpg://db/bastion")) == "postgresql+asyncpg://db/bastion"


async def test_a_url_without_a_driver_gets_the_async_one(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        assert db.url.drivername == "sqlite+aiosqlite"
        assert db.path == tmp_path / "x.db"
    finally:
        await db.aclose()


async def test_postgresql_is_accepted_when_its_driver_is_installed() -> None:
    url = "postgresql://bastion:secret@db.internal/bastion"
    if importlib.util.find_spec("asyncpg") is None:
        with pytest.raises(ConfigError, match="asyncpg") as caught:
            Database(url)
        assert "secret" not in caught.value.detail
        return
    db = Database(url)  # no connection is made until it is used
    try:
        assert not db.is_sqlite
        assert db.path is None
        assert db.url.drivername == "postgresql+asyncpg"
    finally:
        await db.aclose()


@pytest.mark.parametrize("url", ["not a url", "mysql://db/bastion", "oracle+oracledb://db/x"])
def test_other_urls_are_refused(url: str) -> None:
    with pytest.raises(ConfigError):
        Database(url)


# The file.


async def test_the_database_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "bastion.db"
    async with migrated(path) as db:
        async with db.transaction() as connection:
            await connection.execute(insert(UserRow).values(user_row("1", "alice")))
        assert mode(path.parent) == 0o700
        files = sorted(p.name for p in path.parent.iterdir())
        assert files == ["bastion.db", "bastion.db-shm", "bastion.db-wal", "bastion.db.migrate.lock"]
        assert all(mode(path.parent / name) == 0o600 for name in files)


async def test_a_database_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bastion.db"
    path.touch(mode=0o644)
    os.chmod(path, 0o644)
    db = Database(sqlite_url(path))
    try:
        with pytest.raises(ConfigError, match="chmod 600"):
            await db.upgrade()
    finally:
        await db.aclose()


async def test_sqlite_connections_are_configured(database: Database) -> None:
    async with database.read() as connection:
        assert (await connection.execute(text("PRAGMA foreign_keys"))).scalar_one() == 1
        assert (await connection.execute(text("PRAGMA journal_mode"))).scalar_one() == "wal"
        assert (await connection.execute(text("PRAGMA busy_timeout"))).scalar_one() == BUSY_TIMEOUT_MS


# Transactions and errors.


async def test_a_failing_transaction_is_rolled_back(database: Database) -> None:
    with pytest.raises(RuntimeError):
        async with database.transaction() as connection:
            await connection.execute(insert(UserRow).values(user_row("1", "alice")))
            raise RuntimeError("after the insert")
    async with database.read() as connection:
        assert (await connection.execute(select(UserRow.id))).all() == []


async def test_integrity_errors_pass_through_without_parameters(database: Database) -> None:
    async with database.transaction() as connection:
        await connection.execute(insert(UserRow).values(user_row("1", "alice")))
    with pytest.raises(IntegrityError) as caught:
        async with database.transaction() as connection:
            await connection.execute(insert(UserRow).values(user_row("2", "alice")))
    assert "not-a-real-hash" not in str(caught.value)


async def test_two_processes_starting_at_once_both_migrate(tmp_path: Path) -> None:
    path = tmp_path / "bastion.db"
    first, second = Database(sqlite_url(path)), Database(sqlite_url(path))
    try:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as group:
                group.start_soon(first.upgrade)
                group.start_soon(second.upgrade)
        assert await first.revision() == await second.revision() == HEAD
    finally:
        await first.aclose()
        await second.aclose()


# Failing closed.


async def test_a_directory_that_is_a_file_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("not a directory")
    db = Database(sqlite_url(tmp_path / "state" / "bastion.db"))
    try:
        with pytest.raises(Unavailable):
            await db.upgrade()
        with pytest.raises(Unavailable):
            await SQLOAuthStore(db).is_token_revoked("jti", None, now=0.0)
    finally:
        await db.aclose()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any directory")
async def test_an_unreadable_directory_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "state" / "bastion.db"
    async with migrated(path):
        pass
    os.chmod(path.parent, 0)
    db = Database(sqlite_url(path))
    try:
        with pytest.raises(Unavailable):
            await db.ping()
    finally:
        os.chmod(path.parent, 0o700)
        await db.aclose()


async def test_a_corrupt_file_is_unavailable_and_the_store_fails_closed(tmp_path: Path) -> None:
    path = tmp_path / "bastion.db"
    async with migrated(path) as db:
        store = SQLOAuthStore(db)
        await store.revoke_access_token("revoked", expires_at=10.0)
        assert await store.is_token_revoked("revoked", None, now=0.0) is True
        await db.engine.dispose()  # close pooled connections, so the next call reopens the file
        for leftover in (path.with_name("bastion.db-wal"), path.with_name("bastion.db-shm")):
            leftover.unlink(missing_ok=True)
        path.write_bytes(b"this is not an SQLite database" * 200)
        with pytest.raises(Unavailable) as caught:
            await store.is_token_revoked("revoked", None, now=0.0)
        assert caught.value.reason == "unavailable"
        assert caught.value.http_status == 503
        with pytest.raises(Unavailable):
            await db.ping()
