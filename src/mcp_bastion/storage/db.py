"""The database: one async SQLAlchemy engine per process, its migrations, and the error boundary.

URLs: ``sqlite+aiosqlite:///<path>`` (the default, under the state directory) or ``postgresql+asyncpg://…``;
a URL without a driver (``sqlite:///…``, ``postgresql://…``) gets the async one.

Invariants:
- the SQLite file is never readable by group or others: it is created with mode 0600 before SQLite opens
  it (SQLite gives its ``-wal``/``-shm`` files the same mode), and an existing file with a looser mode is
  refused like any other file holding secrets (``privatefile``);
- every SQLite connection runs with ``foreign_keys=ON``, WAL, and a busy timeout, so concurrent writers in
  this process and in other processes wait for each other instead of failing;
- transactions are real on SQLite too: the driver's legacy mode (no BEGIN before SELECT or DDL) is switched
  off and SQLAlchemy emits BEGIN itself; write transactions use ``BEGIN IMMEDIATE``, which takes the write
  lock up front, so a read-then-write transaction cannot fail with ``SQLITE_BUSY`` half-way;
- a database that cannot be reached, read or written raises ``errors.Unavailable`` (503, fail closed);
  integrity errors pass through unchanged (they are the caller's logic: a duplicate key, say);
- SQL parameters never appear in error messages or logs (``hide_parameters``): they include password and
  token digests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import event, text
from sqlalchemy.engine import URL, Connection, Dialect, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, InvalidRequestError, NoSuchModuleError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from mcp_bastion.errors import ConfigError, Unavailable
from mcp_bastion.privatefile import PRIVATE_MODE, check_private

if TYPE_CHECKING:
    from mcp_bastion.settings import Settings

DEFAULT_FILENAME: Final = "bastion.db"
"""The SQLite file's name inside ``server.state_dir`` when no ``storage.url`` is configured."""

BUSY_TIMEOUT_MS: Final = 5000
"""How long a SQLite connection waits for another writer's lock before giving up (then: ``Unavailable``)."""

MIGRATIONS: Final = Path(__file__).with_name("migrations")

_ASYNC_DRIVERS: Final = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}
_BEGIN_OPTION: Final = "bastion_sqlite_begin"
"""Connection execution option read by the ``begin`` hook: the SQLite BEGIN variant to emit."""


def default_url(settings: Settings) -> str:
    """``storage.url`` when configured, else a SQLite file in the state directory."""
    if settings.storage.url:
        return settings.storage.url
    return f"sqlite+aiosqlite:///{settings.server.state_dir / DEFAULT_FILENAME}"


@contextmanager
def translate_errors(what: str = "database") -> Iterator[None]:
    """Turn a driver or pool failure into ``Unavailable``; integrity errors and everything else pass through."""
    try:
        yield
    except IntegrityError:
        raise
    except DBAPIError as exc:
        # ``orig`` is the driver's own exception: its message without the SQL statement.
        raise Unavailable(f"{what}: {type(exc.orig).__name__}: {exc.orig}") from exc
    except (PoolTimeout, OSError) as exc:
        raise Unavailable(f"{what}: {type(exc).__name__}: {exc}") from exc


class Database:
    """An async engine and session factory for one URL; ``aclose()`` disposes of every pooled connection."""

    def __init__(self, url: str) -> None:
        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            raise ConfigError(f"storage.url is not a database URL: {exc}") from exc
        if "+" not in parsed.drivername and parsed.drivername in _ASYNC_DRIVERS:
            parsed = parsed.set(drivername=_ASYNC_DRIVERS[parsed.drivername])
        if parsed.get_backend_name() not in _ASYNC_DRIVERS:
            raise ConfigError(
                f"storage.url: use sqlite+aiosqlite:///… or postgresql+asyncpg://…, not {parsed.drivername}"
            )
        self.url: Final[URL] = parsed
        self.is_sqlite: Final = parsed.get_backend_name() == "sqlite"
        self.path: Final[Path | None] = _sqlite_file(parsed) if self.is_sqlite else None
        """The SQLite database file; None for PostgreSQL and in-memory SQLite."""
        options: dict[str, Any] = {"hide_parameters": True}
        if not self.is_sqlite:
            # A server-side database restarts and drops idle connections; test before handing one out.
            options["pool_pre_ping"] = True
        try:
            self.engine: Final[AsyncEngine] = create_async_engine(parsed, **options)
        except (ImportError, NoSuchModuleError, InvalidRequestError, ArgumentError) as exc:
            raise ConfigError(f"storage.url {parsed.render_as_string()!r} cannot be used: {exc}") from exc
        if self.is_sqlite:
            _install_sqlite_hooks(self.engine, self.path)
        self.sessions: Final = async_sessionmaker(self.engine, expire_on_commit=False, class_=AsyncSession)
        """ORM sessions; prefer ``transaction()``/``read()``, which also translate errors."""
        self._writers: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}

    def _writer(self) -> asyncio.Lock | None:
        """SQLite admits one writer: writers of this process queue here, in order, instead of in SQLite's busy
        handler, which sleeps in growing steps (p99 of concurrent refresh grants was ~1 s). Other processes
        still meet the busy handler. One lock per event loop (a lock is bound to the loop that uses it)."""
        if not self.is_sqlite:
            return None
        loop = asyncio.get_running_loop()
        lock = self._writers.get(loop)
        if lock is None:
            lock = self._writers[loop] = asyncio.Lock()
        return lock

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction: committed at the end of the block, rolled back when it raises. Never open one
        inside another (on SQLite the second would wait for the first forever)."""
        writer = self._writer()
        with translate_errors():
            async with writer if writer is not None else contextlib.nullcontext(), self.engine.connect() as connection:
                await connection.execution_options(**{_BEGIN_OPTION: "BEGIN IMMEDIATE"})
                async with connection.begin():
                    yield connection

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read transaction (deferred BEGIN on SQLite: readers never wait for writers in WAL mode)."""
        with translate_errors():
            async with self.engine.connect() as connection, connection.begin():
                yield connection

    async def upgrade(self) -> None:
        """Bring the schema to the newest migration (run at startup; concurrent starts wait for each other)."""
        from mcp_bastion.storage import migrate  # alembic is imported only when migrating

        async with _migration_lock(self.path), self.transaction() as connection:
            await connection.run_sync(migrate.upgrade)

    async def revision(self) -> str | None:
        """The schema's current migration revision; None for an empty database."""
        from mcp_bastion.storage import migrate

        async with self.read() as connection:
            return await connection.run_sync(migrate.current)

    async def ping(self) -> None:
        """Raise ``Unavailable`` unless the database answers a trivial query (readiness checks)."""
        async with self.read() as connection:
            await connection.execute(text("SELECT 1"))

    async def aclose(self) -> None:
        await self.engine.dispose()


@asynccontextmanager
async def open_database(url: str) -> AsyncIterator[Database]:
    """The database at ``url``, migrated to the newest schema, disposed of when the block ends."""
    db = Database(url)
    try:
        await db.upgrade()
        yield db
    finally:
        await db.aclose()


def _sqlite_file(url: URL) -> Path | None:
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:") or url.query.get("mode") == "memory":
        return None
    return Path(database)


def _create_private(path: Path) -> None:
    """Create the (empty) database file with mode 0600 unless it exists, then refuse a loose mode.

    An ``OSError`` here (a missing or unreadable directory, say) reaches ``translate_errors``: Unavailable.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_MODE)
    except FileExistsError:
        os.stat(path, follow_symlinks=False)  # raises OSError when it cannot be looked at
    else:
        os.close(fd)
    check_private(path, "database file")


def _install_sqlite_hooks(engine: AsyncEngine, path: Path | None) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "do_connect")
    def _before_connect(dialect: Dialect, record: ConnectionPoolEntry, cargs: Any, cparams: Any) -> None:
        # Before SQLite opens (and would create) the file with the process umask.
        if path is not None:
            _create_private(path)

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        # Take BEGIN away from the driver (legacy mode skips it before SELECT and DDL); ``_on_begin`` emits it.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if path is not None:
                cursor.execute("PRAGMA journal_mode = WAL")
        finally:
            cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql(connection.get_execution_options().get(_BEGIN_OPTION, "BEGIN"))


MIGRATION_LOCK_SECONDS: Final = 60.0
"""Longest a start waits for another process (or connection) migrating the same SQLite file."""


@asynccontextmanager
async def _migration_lock(path: Path | None) -> AsyncIterator[None]:
    """Serialise migrations of one SQLite file across processes and connections with an advisory file lock,
    polled without blocking the event loop, instead of leaving two writers to SQLite's busy handler."""
    if path is None:
        yield
        return
    import fcntl

    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(f"{path}.migrate.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, PRIVATE_MODE)
    except OSError as exc:
        raise Unavailable(
            f"{path}: cannot take the migration lock: {exc.strerror}", reason="database_unavailable"
        ) from exc
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + MIGRATION_LOCK_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if loop.time() > deadline:
                    raise Unavailable(f"{path}: another migration holds the lock", reason="migration_locked") from None
                await asyncio.sleep(0.05)
        yield
    finally:
        os.close(fd)
