"""Fixtures for storage tests: a real, migrated SQLite file per test; a throwaway PostgreSQL cluster."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from mcp_bastion.storage.db import Database
from tests.storage.support import migrated, migrated_postgresql, postgresql_missing, postgresql_server


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    async with migrated(tmp_path / "state" / "bastion.db") as db:
        yield db


@pytest.fixture(scope="session")
def postgresql() -> Iterator[str]:
    """One throwaway PostgreSQL cluster for the session (skipped where it cannot run); tests make their own
    database in it (``migrated_postgresql``)."""
    missing = postgresql_missing()
    if missing is not None:
        pytest.skip(missing)
    with postgresql_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """The same test on a migrated SQLite file and on a fresh migrated PostgreSQL database."""
    if request.param == "sqlite":
        async with migrated(tmp_path / "bastion.db") as database:
            yield database
        return
    server: str = request.getfixturevalue("postgresql")
    async with migrated_postgresql(server, f"test_{secrets.token_hex(6)}") as database:
        yield database
