"""Fixtures for identity tests: a real, migrated SQLite file per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mcp_bastion.storage.db import Database
from tests.storage.support import migrated


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    async with migrated(tmp_path / "state" / "bastion.db") as db:
        yield db
