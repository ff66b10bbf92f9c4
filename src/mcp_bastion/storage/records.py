"""Rows <-> ``oauth.store`` records for ``SQLOAuthStore``, and the one dialect-specific statement (upsert).

Each ``*_COLUMNS`` tuple selects a table's columns in the order of the record's fields, so a typed row
unpacks straight into the record. Scopes go in as sorted JSON arrays and come out as frozensets; binary
columns come out as ``bytes`` whatever the driver hands back (``memoryview`` on some).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, cast

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import InstrumentedAttribute

from mcp_bastion.jsonrpc.message import JSONValue
from mcp_bastion.oauth.store import (
    ClientKind,
    ClientRecord,
    CodeRecord,
    ConsentRecord,
    FamilyRecord,
    PendingRecord,
    RefreshRecord,
)
from mcp_bastion.storage.models import Base, ClientRow, CodeRow, ConsentRow, FamilyRow, PendingRow, RefreshRow

CLIENT_COLUMNS: Final = (
    ClientRow.client_id,
    ClientRow.kind,
    ClientRow.client_metadata,
    ClientRow.secret_hash,
    ClientRow.created_at,
    ClientRow.expires_at,
)
PENDING_COLUMNS: Final = (
    PendingRow.id,
    PendingRow.client_id,
    PendingRow.redirect_uri,
    PendingRow.state,
    PendingRow.code_challenge,
    PendingRow.resource,
    PendingRow.scopes,
    PendingRow.created_at,
    PendingRow.expires_at,
)
CODE_COLUMNS: Final = (
    CodeRow.code_hash,
    CodeRow.client_id,
    CodeRow.user_id,
    CodeRow.redirect_uri,
    CodeRow.code_challenge,
    CodeRow.resource,
    CodeRow.scopes,
    CodeRow.family_id,
    CodeRow.created_at,
    CodeRow.expires_at,
    CodeRow.used_at,
)
FAMILY_COLUMNS: Final = (
    FamilyRow.id,
    FamilyRow.client_id,
    FamilyRow.subject,
    FamilyRow.resource,
    FamilyRow.scopes,
    FamilyRow.created_at,
    FamilyRow.expires_at,
    FamilyRow.revoked_at,
    FamilyRow.reason,
    FamilyRow.username,
    FamilyRow.roles,
)
REFRESH_COLUMNS: Final = (
    RefreshRow.token_hash,
    RefreshRow.family_id,
    RefreshRow.created_at,
    RefreshRow.rotated_at,
    RefreshRow.successor,
)
CONSENT_COLUMNS: Final = (
    ConsentRow.user_id,
    ConsentRow.client_id,
    ConsentRow.resource,
    ConsentRow.scopes,
    ConsentRow.granted_at,
    ConsentRow.revoked_at,
)


def values(record: Any, **overrides: object) -> dict[str, object]:
    values: dict[str, object] = {field.name: getattr(record, field.name) for field in dataclasses.fields(record)}
    values.update(overrides)
    return values


def scopes_out(scopes: Iterable[str]) -> list[str]:
    return sorted(scopes)


def client(row: tuple[str, str, dict[str, Any], bytes | None, float, float | None]) -> ClientRecord:
    client_id, kind, metadata, secret_hash, created_at, expires_at = row
    return ClientRecord(
        client_id=client_id,
        kind=cast(ClientKind, kind),
        metadata=cast(Mapping[str, JSONValue], metadata),
        secret_hash=None if secret_hash is None else bytes(secret_hash),
        created_at=created_at,
        expires_at=expires_at,
    )


def pending(row: tuple[str, str, str, str | None, str, str, list[str], float, float]) -> PendingRecord:
    pending_id, client_id, redirect_uri, state, challenge, resource, scopes, created_at, expires_at = row
    return PendingRecord(
        pending_id, client_id, redirect_uri, state, challenge, resource, frozenset(scopes), created_at, expires_at
    )


def code(row: Sequence[Any]) -> CodeRecord:
    code_hash, client_id, user_id, redirect_uri, challenge, resource, scopes, family_id, created, expires, used = row
    return CodeRecord(
        code_hash=bytes(code_hash),
        client_id=client_id,
        user_id=user_id,
        redirect_uri=redirect_uri,
        code_challenge=challenge,
        resource=resource,
        scopes=frozenset(scopes),
        family_id=family_id,
        created_at=created,
        expires_at=expires,
        used_at=used,
    )


def family(row: Sequence[Any]) -> FamilyRecord:
    family_id, client_id, subject, resource, scopes, created_at, expires_at, revoked_at, reason, username, roles = row
    return FamilyRecord(
        family_id,
        client_id,
        subject,
        resource,
        frozenset(scopes),
        created_at,
        expires_at,
        revoked_at,
        reason,
        username,
        frozenset(roles),
    )


def refresh(row: tuple[bytes, str, float, float | None, bytes | None]) -> RefreshRecord:
    token_hash, family_id, created_at, rotated_at, successor = row
    return RefreshRecord(
        bytes(token_hash), family_id, created_at, rotated_at, None if successor is None else bytes(successor)
    )


def consent(row: tuple[str, str, str, list[str], float, float | None]) -> ConsentRecord:
    user_id, client_id, resource, scopes, granted_at, revoked_at = row
    return ConsentRecord(user_id, client_id, resource, frozenset(scopes), granted_at, revoked_at)


# Dialect-specific upsert: the same ON CONFLICT clause in SQLite and PostgreSQL, built by each dialect.


def dialect_insert(connection: AsyncConnection) -> Any:
    return sqlite.insert if connection.dialect.name == "sqlite" else postgresql.insert


async def upsert(
    connection: AsyncConnection,
    model: type[Base],
    values: Mapping[str, object],
    keys: Sequence[InstrumentedAttribute[Any]],
) -> None:
    """Insert ``values`` or replace every non-key column of the row with the same ``keys``."""
    statement = dialect_insert(connection)(model.__table__).values(dict(values))
    key_names = {key.key for key in keys}
    replace = {name: statement.excluded[name] for name in values if name not in key_names}
    await connection.execute(statement.on_conflict_do_update(index_elements=[key.key for key in keys], set_=replace))
