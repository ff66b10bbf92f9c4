"""Fixtures for storage tests: a real, migrated SQLite file per test; a throwaway PostgreSQL cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from mcp_bastion.storage.db import Database
from tests.storage.support import migrated, postgresql_missing, postgresql_server


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
