"""Per-user upstream credentials, sealed by the vault, one row per (upstream, user).

Invariants:
- the secret is stored only as a vault blob whose owner is the row id (``<upstream>\\x1f<principal key>``)
  and purpose ``upstream-credential``: a blob copied to another user's or upstream's row does not open;
- plaintext leaves ``secret_for`` only to the caller, for one request; the in-memory cache holds the
  *sealed* blobs (a database read per call would cost ~1 ms), for at most ``cache_seconds``, so a removed
  or replaced credential stops being used within that time in every process;
- secrets never appear in logs, errors or ``repr``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, final

from sqlalchemy import delete, select

from mcp_bastion.storage import records
from mcp_bastion.storage.db import Database
from mcp_bastion.storage.models import UpstreamCredentialRow
from mcp_bastion.vault.envelope import Vault

PURPOSE: Final = "upstream-credential"
CACHE_SECONDS: Final = 30.0
CACHE_SIZE: Final = 10_000


def row_id(upstream: str, principal_key: str) -> str:
    return f"{upstream}\x1f{principal_key}"


@dataclass(frozen=True, slots=True)
class CredentialInfo:
    """A stored credential without its secret (``mcp-bastion credentials list``)."""

    upstream: str
    principal: str
    updated_at: float


async def forget_user(db: Database, principal_key: str) -> int:
    """Delete every upstream credential of one user (disabled); the count removed. Needs no vault key.
    Gateways stop using them within ``CACHE_SECONDS``."""
    table = UpstreamCredentialRow
    async with db.transaction() as connection:
        result = await connection.execute(delete(table).where(table.principal == principal_key))
    return int(result.rowcount or 0)


@final
class CredentialStore:
    def __init__(
        self,
        db: Database,
        vault: Vault,
        *,
        cache_seconds: float = CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._vault = vault
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._wall_clock = wall_clock
        self._cache: OrderedDict[str, tuple[float, bytes | None]] = OrderedDict()

    def __repr__(self) -> str:
        return "CredentialStore()"

    async def put(self, upstream: str, principal_key: str, secret: bytes) -> None:
        key = row_id(upstream, principal_key)
        sealed = self._vault.seal(secret, owner=key, purpose=PURPOSE)
        values = {
            "id": key,
            "upstream": upstream,
            "principal": principal_key,
            "secret": sealed,
            "updated_at": self._wall_clock(),
        }
        async with self._db.transaction() as connection:
            await records.upsert(connection, UpstreamCredentialRow, values, (UpstreamCredentialRow.id,))
        self._cache.pop(key, None)

    async def remove(self, upstream: str, principal_key: str) -> bool:
        key = row_id(upstream, principal_key)
        async with self._db.transaction() as connection:
            result = await connection.execute(delete(UpstreamCredentialRow).where(UpstreamCredentialRow.id == key))
        self._cache.pop(key, None)
        return bool(result.rowcount)

    async def list(self, upstream: str | None = None) -> Sequence[CredentialInfo]:
        table = UpstreamCredentialRow
        query = select(table.upstream, table.principal, table.updated_at).order_by(table.upstream, table.principal)
        if upstream is not None:
            query = query.where(table.upstream == upstream)
        async with self._db.read() as connection:
            return [CredentialInfo(*row) for row in (await connection.execute(query)).all()]

    async def secret_for(self, upstream: str, principal_key: str) -> bytes | None:
        """The user's secret for ``upstream`` (None: none stored). ``InvalidCiphertext`` for a blob that does
        not open (moved, tampered), ``Unavailable`` when the database or the vault cannot answer."""
        key = row_id(upstream, principal_key)
        sealed = await self._sealed(key)
        if sealed is None:
            return None
        return self._vault.open(sealed, owner=key, purpose=PURPOSE)

    async def _sealed(self, key: str) -> bytes | None:
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and now - cached[0] < self._cache_seconds:
            return cached[1]
        query = select(UpstreamCredentialRow.secret).where(UpstreamCredentialRow.id == key)
        async with self._db.read() as connection:
            row = (await connection.execute(query)).first()
        sealed = bytes(row[0]) if row is not None else None
        self._cache[key] = (now, sealed)
        self._cache.move_to_end(key)
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return sealed
