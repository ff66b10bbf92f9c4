"""Helpers shared by the storage, identity and CLI tests: real SQLite files, migrated, and a throwaway
PostgreSQL cluster when its binaries and ``asyncpg`` are installed."""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Final

from sqlalchemy.engine import make_url

from mcp_bastion.storage.db import Database, open_database


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


@asynccontextmanager
async def migrated(path: Path) -> AsyncIterator[Database]:
    """A database file at ``path`` at the newest migration, disposed of afterwards."""
    async with open_database(sqlite_url(path)) as db:
        yield db


def _server_binaries() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl``: on PATH, or Debian's (not on PATH by default), newest."""
    found = shutil.which("initdb")
    if found is not None:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return versions[-1].parent if versions else None


BINARIES: Final = _server_binaries()
POSTGRES_USER: Final = "postgres"
"""``initdb`` refuses to run as root: the throwaway cluster belongs to this system user when we are root."""


def postgresql_missing() -> str | None:
    """Why a throwaway PostgreSQL cannot run here (the tests using it are skipped), or None."""
    if importlib.util.find_spec("asyncpg") is None:
        return "asyncpg is not installed"
    if BINARIES is None or not (BINARIES / "pg_ctl").exists():
        return "PostgreSQL server binaries (initdb, pg_ctl) are not installed"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(POSTGRES_USER)
        except KeyError:
            return f"running as root without a {POSTGRES_USER!r} user for initdb"
    return None


@contextmanager
def postgresql_server() -> Iterator[str]:
    """A private PostgreSQL cluster listening only on a Unix socket; the URL of its ``postgres`` database
    (``?host=`` names the socket directory). Stopped and deleted afterwards. The directory is made under
    ``/tmp`` rather than pytest's (private to root): the cluster's own user must reach it."""
    directory = Path(tempfile.mkdtemp(prefix="bastion-pg-"))
    data, sockets = directory / "data", directory / "sockets"
    sockets.mkdir()
    run_as: list[str] = []
    if os.geteuid() == 0:
        run_as = ["runuser", "-u", POSTGRES_USER, "--"]
        uid = pwd.getpwnam(POSTGRES_USER).pw_uid
        os.chown(directory, uid, -1)
        os.chown(sockets, uid, -1)

    def run(*command: str) -> None:
        subprocess.run([*run_as, *command], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True, timeout=60)

    try:
        assert BINARIES is not None
        initdb, pg_ctl = str(BINARIES / "initdb"), str(BINARIES / "pg_ctl")
        run(initdb, "-D", str(data), "-U", "postgres", "-A", "trust")
        run(pg_ctl, "-D", str(data), "-o", f"-c listen_addresses='' -k {sockets} -c fsync=off", "-w", "start")
        try:
            yield f"postgresql+asyncpg://postgres@/postgres?host={sockets}"
        finally:
            run(pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@asynccontextmanager
async def migrated_postgresql(server_url: str, name: str) -> AsyncIterator[Database]:
    """A fresh database ``name`` on the cluster at ``server_url``, migrated, disposed of afterwards."""
    admin = Database(server_url)
    try:
        async with admin.engine.connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.exec_driver_sql(f'CREATE DATABASE "{name}"')
    finally:
        await admin.aclose()
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    async with open_database(url) as db:
        yield db
