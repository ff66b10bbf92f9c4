"""``SQLOAuthStore``: the ``oauth.store.OAuthStore`` contract on SQLite or PostgreSQL.

The behaviour is the in-memory reference's (``oauth.memstore``), checked by one contract test-suite run
against both (``tests/storage/test_store_contract.py``). What SQL adds is how the single atomic steps stay
atomic across connections, processes and replicas:

- ``consume_code`` and ``rotate_refresh`` start with a conditional ``UPDATE … WHERE used_at IS NULL``
  (``rotated_at IS NULL``) and look at the row count: the database lets exactly one concurrent caller
  change the row; the others see 0 rows and read the winner's values. On PostgreSQL (READ COMMITTED) a
  second UPDATE waits for the first transaction and re-checks its WHERE clause; on SQLite write
  transactions are serialised (``BEGIN IMMEDIATE``);
- ``take_pending`` deletes by id and returns the row only when the DELETE removed it;
- ``remember_assertion`` is one ``INSERT … ON CONFLICT DO UPDATE … WHERE expired``: the row count says
  whether this ``jti`` was new (or only remembered past its expiry);
- ``is_token_revoked`` is one SELECT of two EXISTS sub-queries (the resource side asks on every request).

Every call is one transaction; any storage failure raises ``errors.Unavailable`` (``storage.db``), so the
caller fails closed and never reads "not revoked" out of an error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from sqlalchemy import case, delete, exists, literal, select, update

from mcp_bastion.oauth.store import (
    ClientRecord,
    CodeRecord,
    ConsentRecord,
    FamilyRecord,
    PendingRecord,
    RefreshRecord,
    RotationOutcome,
)
from mcp_bastion.storage import records
from mcp_bastion.storage.db import Database
from mcp_bastion.storage.models import (
    AssertionJTIRow,
    ClientRow,
    CodeRow,
    ConsentRow,
    FamilyRow,
    PendingRow,
    RefreshRow,
    RevokedJTIRow,
)


class SQLOAuthStore:
    """``OAuthStore`` over the tables of ``storage.models`` (the schema comes from ``Database.upgrade()``)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # Clients.

    async def put_client(self, record: ClientRecord) -> None:
        values = {
            "client_id": record.client_id,
            "kind": record.kind,
            "metadata": dict(record.metadata),
            "secret_hash": record.secret_hash,
            "created_at": record.created_at,
            "expires_at": record.expires_at,
        }
        async with self._db.transaction() as connection:
            await records.upsert(connection, ClientRow, values, (ClientRow.client_id,))

    async def get_client(self, client_id: str) -> ClientRecord | None:
        async with self._db.read() as connection:
            row = (
                await connection.execute(select(*records.CLIENT_COLUMNS).where(ClientRow.client_id == client_id))
            ).one_or_none()
        return None if row is None else records.client(row)

    async def delete_client(self, client_id: str) -> bool:
        async with self._db.transaction() as connection:
            result = await connection.execute(delete(ClientRow).where(ClientRow.client_id == client_id))
        return result.rowcount > 0

    async def list_clients(self) -> Sequence[ClientRecord]:
        async with self._db.read() as connection:
            rows = (await connection.execute(select(*records.CLIENT_COLUMNS))).all()
        # Sorted here, not by the database: code-point order whatever the server's collation.
        return sorted((records.client(row) for row in rows), key=lambda record: record.client_id)

    # Pending authorizations.

    async def put_pending(self, record: PendingRecord) -> None:
        values = records.values(record, scopes=records.scopes_out(record.scopes))
        async with self._db.transaction() as connection:
            await records.upsert(connection, PendingRow, values, (PendingRow.id,))

    async def get_pending(self, pending_id: str) -> PendingRecord | None:
        async with self._db.read() as connection:
            row = (
                await connection.execute(select(*records.PENDING_COLUMNS).where(PendingRow.id == pending_id))
            ).one_or_none()
        return None if row is None else records.pending(row)

    async def take_pending(self, pending_id: str) -> PendingRecord | None:
        async with self._db.transaction() as connection:
            row = (
                await connection.execute(select(*records.PENDING_COLUMNS).where(PendingRow.id == pending_id))
            ).one_or_none()
            if row is None:
                return None
            removed = await connection.execute(delete(PendingRow).where(PendingRow.id == pending_id))
        # Only the caller whose DELETE removed the row gets it.
        return records.pending(row) if removed.rowcount == 1 else None

    # Authorization codes.

    async def put_code(self, record: CodeRecord) -> None:
        values = records.values(record, scopes=records.scopes_out(record.scopes))
        async with self._db.transaction() as connection:
            await records.upsert(connection, CodeRow, values, (CodeRow.code_hash,))

    async def consume_code(self, code_hash: bytes, now: float) -> CodeRecord | None:
        mark = update(CodeRow).where(CodeRow.code_hash == code_hash, CodeRow.used_at.is_(None)).values(used_at=now)
        async with self._db.transaction() as connection:
            won = (await connection.execute(mark)).rowcount == 1
            # Winner or not, the row now holds the first caller's ``used_at``.
            row = (
                await connection.execute(select(*records.CODE_COLUMNS).where(CodeRow.code_hash == code_hash))
            ).one_or_none()
        if row is None:
            return None
        record = records.code(row)
        # The contract returns the record as it was before this call: the winner sees it unused.
        return dataclasses.replace(record, used_at=None) if won else record

    # Token families.

    async def put_family(self, record: FamilyRecord) -> None:
        values = records.values(record, scopes=records.scopes_out(record.scopes), roles=sorted(record.roles))
        async with self._db.transaction() as connection:
            await records.upsert(connection, FamilyRow, values, (FamilyRow.id,))

    async def get_family(self, family_id: str) -> FamilyRecord | None:
        async with self._db.read() as connection:
            row = (
                await connection.execute(select(*records.FAMILY_COLUMNS).where(FamilyRow.id == family_id))
            ).one_or_none()
        return None if row is None else records.family(row)

    async def revoke_family(self, family_id: str, now: float, reason: str) -> bool:
        first = (
            update(FamilyRow)
            .where(FamilyRow.id == family_id, FamilyRow.revoked_at.is_(None))
            .values(revoked_at=now, reason=reason)
        )
        async with self._db.transaction() as connection:
            if (await connection.execute(first)).rowcount == 1:
                return True
            found = await connection.execute(select(FamilyRow.id).where(FamilyRow.id == family_id))
            return found.first() is not None

    async def revoke_families(self, client_id: str, subject: str, now: float, reason: str) -> int:
        statement = (
            update(FamilyRow)
            .where(FamilyRow.client_id == client_id, FamilyRow.subject == subject, FamilyRow.revoked_at.is_(None))
            .values(revoked_at=now, reason=reason)
        )
        async with self._db.transaction() as connection:
            return (await connection.execute(statement)).rowcount

    async def revoke_all_families(
        self, *, now: float, reason: str, client_id: str | None = None, subject: str | None = None
    ) -> int:
        """Operator actions beyond the protocol: end every grant of a removed client or a disabled user."""
        if client_id is None and subject is None:
            raise ValueError("name a client_id or a subject")
        statement = update(FamilyRow).where(FamilyRow.revoked_at.is_(None)).values(revoked_at=now, reason=reason)
        if client_id is not None:
            statement = statement.where(FamilyRow.client_id == client_id)
        if subject is not None:
            statement = statement.where(FamilyRow.subject == subject)
        async with self._db.transaction() as connection:
            return (await connection.execute(statement)).rowcount

    # Refresh tokens.

    async def put_refresh(self, record: RefreshRecord) -> None:
        async with self._db.transaction() as connection:
            await records.upsert(connection, RefreshRow, records.values(record), (RefreshRow.token_hash,))

    async def get_refresh(self, token_hash: bytes) -> RefreshRecord | None:
        async with self._db.read() as connection:
            row = (
                await connection.execute(select(*records.REFRESH_COLUMNS).where(RefreshRow.token_hash == token_hash))
            ).one_or_none()
        return None if row is None else records.refresh(row)

    async def rotate_refresh(
        self, token_hash: bytes, successor: RefreshRecord, sealed_pair: bytes, now: float, grace_seconds: float
    ) -> RotationOutcome | None:
        rotate = (
            update(RefreshRow)
            .where(RefreshRow.token_hash == token_hash, RefreshRow.rotated_at.is_(None))
            .values(rotated_at=now, successor=sealed_pair)
        )
        lookup = select(*records.REFRESH_COLUMNS).where(RefreshRow.token_hash == token_hash)
        async with self._db.transaction() as connection:
            won = (await connection.execute(rotate)).rowcount == 1
            if won:
                await records.upsert(connection, RefreshRow, records.values(successor), (RefreshRow.token_hash,))
            row = (await connection.execute(lookup)).one_or_none()
        if row is None:
            return None
        record = records.refresh(row)
        if won:
            return RotationOutcome("rotated", record)
        assert record.rotated_at is not None  # the UPDATE matched nothing, so the token was rotated already
        return RotationOutcome("grace" if now - record.rotated_at <= grace_seconds else "reused", record)

    # Consents.

    async def put_consent(self, record: ConsentRecord) -> None:
        values = records.values(record, scopes=records.scopes_out(record.scopes))
        keys = (ConsentRow.user_id, ConsentRow.client_id, ConsentRow.resource)
        async with self._db.transaction() as connection:
            await records.upsert(connection, ConsentRow, values, keys)

    async def get_consents(self, user_id: str, client_id: str) -> Sequence[ConsentRecord]:
        query = (
            select(*records.CONSENT_COLUMNS)
            .where(ConsentRow.user_id == user_id, ConsentRow.client_id == client_id)
            .order_by(ConsentRow.granted_at.desc())
        )
        async with self._db.read() as connection:
            rows = (await connection.execute(query)).all()
        return [records.consent(row) for row in rows]

    async def revoke_consents(self, user_id: str, client_id: str, now: float) -> int:
        statement = (
            update(ConsentRow)
            .where(ConsentRow.user_id == user_id, ConsentRow.client_id == client_id, ConsentRow.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        async with self._db.transaction() as connection:
            return (await connection.execute(statement)).rowcount

    # Access-token revocation.

    async def revoke_access_token(self, jti: str, expires_at: float) -> None:
        table = RevokedJTIRow.__table__
        async with self._db.transaction() as connection:
            statement = records.dialect_insert(connection)(table).values(jti=jti, expires_at=expires_at)
            # Revoked twice: keep the later expiry (a revocation never ends early).
            later = case(
                (statement.excluded.expires_at > table.c.expires_at, statement.excluded.expires_at),
                else_=table.c.expires_at,
            )
            await connection.execute(
                statement.on_conflict_do_update(index_elements=["jti"], set_={"expires_at": later})
            )

    async def is_token_revoked(self, jti: str | None, family_id: str | None, now: float) -> bool:
        jti_revoked = exists().where(RevokedJTIRow.jti == jti) if jti is not None else literal(False)
        family_live = (
            exists().where(FamilyRow.id == family_id, FamilyRow.revoked_at.is_(None), FamilyRow.expires_at > now)
            if family_id is not None
            else literal(True)
        )
        async with self._db.read() as connection:
            revoked, live = (await connection.execute(select(jti_revoked, family_live))).one()
        return bool(revoked) or not live

    # Client assertions.

    async def remember_assertion(self, client_id: str, jti: str, expires_at: float, now: float) -> bool:
        table = AssertionJTIRow.__table__
        async with self._db.transaction() as connection:
            statement = records.dialect_insert(connection)(table).values(
                client_id=client_id, jti=jti, expires_at=expires_at
            )
            statement = statement.on_conflict_do_update(
                index_elements=["client_id", "jti"],
                set_={"expires_at": statement.excluded.expires_at},
                # A remembered jti counts until its expiry; after that it may be remembered afresh.
                where=table.c.expires_at <= now,
            )
            return (await connection.execute(statement)).rowcount == 1

    async def purge(self, now: float) -> int:
        expired = (
            delete(PendingRow).where(PendingRow.expires_at <= now),
            delete(CodeRow).where(CodeRow.expires_at <= now),
            delete(RevokedJTIRow).where(RevokedJTIRow.expires_at <= now),
            delete(AssertionJTIRow).where(AssertionJTIRow.expires_at <= now),
            delete(ClientRow).where(ClientRow.expires_at.is_not(None), ClientRow.expires_at <= now),
            delete(FamilyRow).where(FamilyRow.expires_at <= now),
            # A family's refresh tokens go with it (and any written for a family that never existed).
            delete(RefreshRow).where(RefreshRow.family_id.not_in(select(FamilyRow.id))),
        )
        count = 0
        async with self._db.transaction() as connection:
            for statement in expired:
                count += (await connection.execute(statement)).rowcount
        return count
