"""An in-memory ``OAuthStore``: the reference implementation of ``oauth.store``'s contract, for unit tests
and single-process demos. Nothing survives a restart.

Atomicity comes from the event loop: no method awaits between reading and writing, so each runs as one
step with respect to other coroutines (the SQL store gets the same property from transactions).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import final

from mcp_bastion.oauth.store import (
    ClientRecord,
    CodeRecord,
    ConsentRecord,
    FamilyRecord,
    PendingRecord,
    RefreshRecord,
    RotationOutcome,
)


@final
class MemoryOAuthStore:
    """Dictionaries behind the ``OAuthStore`` protocol. ``fail`` makes every call raise (fail-closed tests)."""

    def __init__(self) -> None:
        self.clients: dict[str, ClientRecord] = {}
        self.pending: dict[str, PendingRecord] = {}
        self.codes: dict[bytes, CodeRecord] = {}
        self.families: dict[str, FamilyRecord] = {}
        self.refresh: dict[bytes, RefreshRecord] = {}
        self.consents: dict[tuple[str, str, str], ConsentRecord] = {}
        self.revoked_jtis: dict[str, float] = {}
        self.assertions: dict[tuple[str, str], float] = {}
        self.fail: Exception | None = None

    def _check(self) -> None:
        if self.fail is not None:
            raise self.fail

    # Clients.
    async def put_client(self, record: ClientRecord) -> None:
        self._check()
        self.clients[record.client_id] = record

    async def get_client(self, client_id: str) -> ClientRecord | None:
        self._check()
        return self.clients.get(client_id)

    async def delete_client(self, client_id: str) -> bool:
        self._check()
        return self.clients.pop(client_id, None) is not None

    async def list_clients(self) -> Sequence[ClientRecord]:
        self._check()
        return sorted(self.clients.values(), key=lambda record: record.client_id)

    # Pending authorizations.
    async def put_pending(self, record: PendingRecord) -> None:
        self._check()
        self.pending[record.id] = record

    async def get_pending(self, pending_id: str) -> PendingRecord | None:
        self._check()
        return self.pending.get(pending_id)

    async def take_pending(self, pending_id: str) -> PendingRecord | None:
        self._check()
        return self.pending.pop(pending_id, None)

    # Authorization codes.
    async def put_code(self, record: CodeRecord) -> None:
        self._check()
        self.codes[record.code_hash] = record

    async def consume_code(self, code_hash: bytes, now: float) -> CodeRecord | None:
        self._check()
        record = self.codes.get(code_hash)
        if record is None or record.used_at is not None:
            return record
        self.codes[code_hash] = dataclasses.replace(record, used_at=now)
        return record

    # Token families.
    async def put_family(self, record: FamilyRecord) -> None:
        self._check()
        self.families[record.id] = record

    async def get_family(self, family_id: str) -> FamilyRecord | None:
        self._check()
        return self.families.get(family_id)

    async def revoke_family(self, family_id: str, now: float, reason: str) -> bool:
        self._check()
        record = self.families.get(family_id)
        if record is None:
            return False
        if record.revoked_at is None:
            self.families[family_id] = dataclasses.replace(record, revoked_at=now, reason=reason)
        return True

    async def revoke_families(self, client_id: str, subject: str, now: float, reason: str) -> int:
        self._check()
        count = 0
        for family_id, record in list(self.families.items()):
            if (record.client_id, record.subject) == (client_id, subject) and record.revoked_at is None:
                self.families[family_id] = dataclasses.replace(record, revoked_at=now, reason=reason)
                count += 1
        return count

    # Refresh tokens.
    async def put_refresh(self, record: RefreshRecord) -> None:
        self._check()
        self.refresh[record.token_hash] = record

    async def get_refresh(self, token_hash: bytes) -> RefreshRecord | None:
        self._check()
        return self.refresh.get(token_hash)

    async def rotate_refresh(
        self, token_hash: bytes, successor: RefreshRecord, sealed_pair: bytes, now: float, grace_seconds: float
    ) -> RotationOutcome | None:
        self._check()
        record = self.refresh.get(token_hash)
        if record is None:
            return None
        if record.rotated_at is None:
            rotated = dataclasses.replace(record, rotated_at=now, successor=sealed_pair)
            self.refresh[token_hash] = rotated
            self.refresh[successor.token_hash] = successor
            return RotationOutcome("rotated", rotated)
        if now - record.rotated_at <= grace_seconds:
            return RotationOutcome("grace", record)
        return RotationOutcome("reused", record)

    # Consents.
    async def put_consent(self, record: ConsentRecord) -> None:
        self._check()
        self.consents[(record.user_id, record.client_id, record.resource)] = record

    async def get_consents(self, user_id: str, client_id: str) -> Sequence[ConsentRecord]:
        self._check()
        found = [c for (user, client, _), c in self.consents.items() if (user, client) == (user_id, client_id)]
        return sorted(found, key=lambda record: record.granted_at, reverse=True)

    async def revoke_consents(self, user_id: str, client_id: str, now: float) -> int:
        self._check()
        count = 0
        for key, record in list(self.consents.items()):
            if key[:2] == (user_id, client_id) and record.revoked_at is None:
                self.consents[key] = dataclasses.replace(record, revoked_at=now)
                count += 1
        return count

    # Access-token revocation.
    async def revoke_access_token(self, jti: str, expires_at: float) -> None:
        self._check()
        self.revoked_jtis[jti] = max(expires_at, self.revoked_jtis.get(jti, expires_at))

    async def is_token_revoked(self, jti: str | None, family_id: str | None, now: float) -> bool:
        self._check()
        if jti is not None and jti in self.revoked_jtis:
            return True
        if family_id is None:
            return False
        family = self.families.get(family_id)
        return family is None or family.revoked_at is not None or now >= family.expires_at

    # Client assertions.
    async def remember_assertion(self, client_id: str, jti: str, expires_at: float, now: float) -> bool:
        self._check()
        key = (client_id, jti)
        seen = self.assertions.get(key)
        if seen is not None and seen > now:
            return False
        self.assertions[key] = expires_at
        return True

    async def purge(self, now: float) -> int:
        self._check()
        before = self._size()
        self.pending = {k: v for k, v in self.pending.items() if v.expires_at > now}
        self.codes = {k: v for k, v in self.codes.items() if v.expires_at > now}
        self.revoked_jtis = {k: v for k, v in self.revoked_jtis.items() if v > now}
        self.assertions = {k: v for k, v in self.assertions.items() if v > now}
        self.clients = {k: v for k, v in self.clients.items() if v.expires_at is None or v.expires_at > now}
        self.families = {k: v for k, v in self.families.items() if v.expires_at > now}
        # A family's refresh tokens go with it.
        self.refresh = {k: v for k, v in self.refresh.items() if v.family_id in self.families}
        return before - self._size()

    def _size(self) -> int:
        return (
            len(self.pending)
            + len(self.codes)
            + len(self.revoked_jtis)
            + len(self.assertions)
            + len(self.clients)
            + len(self.families)
            + len(self.refresh)
        )
