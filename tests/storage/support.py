"""Helpers shared by the storage, identity and CLI tests: real SQLite files, migrated."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from mcp_bastion.storage.db import Database


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


@asynccontextmanager
async def migrated(path: Path) -> AsyncIterator[Database]:
    """A database file at ``path`` at the newest migration, disposed of afterwards."""
    db = Database(sqlite_url(path))
    try:
        await db.upgrade()
        yield db
    finally:
        await db.aclose()
