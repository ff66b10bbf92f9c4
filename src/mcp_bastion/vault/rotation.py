"""Re-wrapping stored secrets onto the current KEK (``mcp-bastion vault rotate``), and counting them.

Every column that holds vault blobs is listed in ``SEALED`` with how to rebuild each blob's owner,
purpose and context. ``rewrap_all`` walks each table in primary-key order, in batches, and re-seals every
blob that names an older KEK version; ``status`` counts blobs per version.

Invariants:
- online and resumable: rows are updated one by one with a compare-and-swap on the old blob (a row
  changed meanwhile by the gateway is left to it), rows already on the current KEK are skipped, so an
  interrupted run is finished by running it again, and the gateway keeps serving throughout (older KEK
  versions stay available until every record left them);
- no secret is lost: a blob that cannot be opened is counted and left as it is, never overwritten;
- plaintext exists only inside ``Vault.rewrap`` for the time of one record.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import select, update
from sqlalchemy.orm import InstrumentedAttribute

from mcp_bastion.storage.db import Database
from mcp_bastion.storage.models import SigningKeyRow, UpstreamCredentialRow
from mcp_bastion.vault.envelope import InvalidCiphertext, Vault

BATCH: Final = 200


@dataclass(frozen=True, slots=True)
class SealedColumn:
    """A column of vault blobs and how to rebuild each blob's labels from its row."""

    name: str
    key: InstrumentedAttribute[Any]
    blob: InstrumentedAttribute[Any]
    owner: Callable[[Any], str]
    purpose: str
    context: Callable[[Any], bytes] = field(default=lambda _key: b"")


SEALED: Final[tuple[SealedColumn, ...]] = (
    SealedColumn("signing keys", SigningKeyRow.kid, SigningKeyRow.private_jwk, owner=str, purpose="signing-key"),
    SealedColumn(
        "upstream credentials",
        UpstreamCredentialRow.id,
        UpstreamCredentialRow.secret,
        owner=str,
        purpose="upstream-credential",
    ),
)
"""Every stored vault blob that outlives a request. (The refresh grace-window pairs are sealed too, but
live for seconds: they are not worth re-wrapping and simply expire.)"""


@dataclass(slots=True)
class RewrapReport:
    rewrapped: int = 0
    current: int = 0
    """Already on the current KEK."""
    unreadable: int = 0
    """Blobs that do not open (left untouched)."""
    changed: int = 0
    """Rows the gateway changed while we worked (left to it)."""


async def status(db: Database, columns: Sequence[SealedColumn] = SEALED) -> Mapping[str, Counter[str]]:
    """Per column, how many blobs name each KEK version (read from the blob headers; nothing is opened)."""
    counts: dict[str, Counter[str]] = {}
    for column in columns:
        counter: Counter[str] = Counter()
        async with db.read() as connection:
            for (blob,) in (await connection.execute(select(column.blob))).all():
                try:
                    counter[Vault.kek_id_of(bytes(blob))] += 1
                except InvalidCiphertext:
                    counter["(unreadable)"] += 1
        counts[column.name] = counter
    return counts


async def rewrap_all(
    db: Database,
    vault: Vault,
    current: str,
    *,
    columns: Sequence[SealedColumn] = SEALED,
    progress: Callable[[int], None] = lambda _n: None,
    batch: int = BATCH,
) -> RewrapReport:
    """Re-seal every blob not on KEK ``current``; ``progress(n)`` after each row looked at."""
    report = RewrapReport()
    for column in columns:
        after: object = None
        while True:
            query = select(column.key, column.blob).order_by(column.key).limit(batch)
            if after is not None:
                query = query.where(column.key > after)
            async with db.read() as connection:
                rows = (await connection.execute(query)).all()
            if not rows:
                break
            for key, blob in rows:
                await _rewrap_one(db, vault, column, key, bytes(blob), current, report)
                progress(1)
            after = rows[-1][0]
    return report


async def _rewrap_one(
    db: Database, vault: Vault, column: SealedColumn, key: object, blob: bytes, current: str, report: RewrapReport
) -> None:
    try:
        if Vault.kek_id_of(blob) == current:
            report.current += 1
            return
        fresh = vault.rewrap(blob, owner=column.owner(key), purpose=column.purpose, context=column.context(key))
    except InvalidCiphertext:
        report.unreadable += 1
        return
    statement = update(column.key.class_).where(column.key == key, column.blob == blob).values({column.blob.key: fresh})
    async with db.transaction() as connection:
        result = await connection.execute(statement)
    if result.rowcount == 1:
        report.rewrapped += 1
    else:
        report.changed += 1
