"""Pending upstream account links (``delegation.oauthlink.LinkStore``) in the database, so a link made by
one replica can be signed in for and completed on any other.

Invariants:
- single use across replicas: the callback's take is one ``DELETE … WHERE state_hash = ? RETURNING``;
  the database lets exactly one statement remove the row, every other take finds nothing;
- expiry is wall-clock (``expires_at`` is compared with ``time.time()``: monotonic clocks differ between
  machines); expired rows are ignored at once and purged by the next ``create``;
- at most ``MAX_LINKS_PER_PRINCIPAL`` links per principal, the oldest removed first: a user can only push
  out their own links. (Two creates racing for one user may leave one extra until the next create.)
- no secret in the clear: ``state`` and the browser cookie are stored as SHA-256 digests, the PKCE
  verifier sealed by the vault for (owner = link id, purpose ``upstream-link``), so a blob copied to
  another link's row does not open.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Final, Literal, cast, final

from sqlalchemy import delete, func, insert, select, update

from mcp_bastion.delegation.oauthlink import (
    LINK_SECONDS,
    MAX_LINKS_PER_PRINCIPAL,
    PendingLink,
    StartedLink,
    new_secrets,
)
from mcp_bastion.exchange import Principal
from mcp_bastion.oauth.grants import digest
from mcp_bastion.storage.db import Database
from mcp_bastion.storage.models import UpstreamLinkRow
from mcp_bastion.vault.envelope import InvalidCiphertext, Vault

PURPOSE: Final = "upstream-link"

_T = UpstreamLinkRow


def _principal(subject: str, issuer: str, method: str) -> Principal:
    return Principal(subject, issuer, cast(Literal["bearer", "mtls", "none"], method))


@final
class SQLLinkStore:
    def __init__(self, db: Database, vault: Vault, *, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._vault = vault
        self._clock = clock

    def __repr__(self) -> str:
        return "SQLLinkStore()"

    async def create(self, upstream: str, principal: Principal) -> PendingLink:
        now = self._clock()
        link = PendingLink(
            id=secrets.token_urlsafe(24),
            upstream=upstream,
            principal=principal,
            form_token=secrets.token_urlsafe(24),
        )
        row = {
            "id": link.id,
            "upstream": upstream,
            "principal": principal.key,
            "subject": principal.subject,
            "issuer": principal.issuer,
            "method": principal.method,
            "form_token": link.form_token,
            "created_at": now,
            "expires_at": now + LINK_SECONDS,
        }
        # Keep this user's newest links, the new one included; ties on created_at are broken by id.
        newest = (
            select(_T.id)
            .where(_T.principal == principal.key)
            .order_by(_T.created_at.desc(), _T.id.desc())
            .limit(MAX_LINKS_PER_PRINCIPAL)
        )
        async with self._db.transaction() as connection:
            await connection.execute(delete(_T).where(_T.expires_at <= now))
            await connection.execute(insert(_T).values(**row))
            count = (
                await connection.execute(select(func.count()).select_from(_T).where(_T.principal == principal.key))
            ).scalar_one()
            if count > MAX_LINKS_PER_PRINCIPAL:
                kept = [row_id for (row_id,) in (await connection.execute(newest)).all()]
                await connection.execute(delete(_T).where(_T.principal == principal.key, _T.id.not_in(kept)))
        return link

    async def get(self, link_id: str) -> PendingLink | None:
        query = select(_T.id, _T.upstream, _T.subject, _T.issuer, _T.method, _T.form_token).where(
            _T.id == link_id, _T.expires_at > self._clock()
        )
        async with self._db.read() as connection:
            row = (await connection.execute(query)).one_or_none()
        if row is None:
            return None
        principal = _principal(row.subject, row.issuer, row.method)
        return PendingLink(row.id, row.upstream, principal, row.form_token)

    async def mark_started(self, link: PendingLink) -> tuple[StartedLink, str] | None:
        state, verifier, cookie = new_secrets()
        sealed = self._vault.seal(verifier.encode(), owner=link.id, purpose=PURPOSE)
        started = (
            update(_T)
            .where(_T.id == link.id, _T.expires_at > self._clock())
            .values(state_hash=digest(state), browser_hash=digest(cookie), verifier=sealed)
        )
        async with self._db.transaction() as connection:
            if (await connection.execute(started)).rowcount != 1:
                return None
        taken = StartedLink(link.id, link.upstream, link.principal, state, verifier, digest(cookie))
        return taken, cookie

    async def take_by_state(self, state: str) -> StartedLink | None:
        taken = (
            delete(_T)
            .where(_T.state_hash == digest(state))
            .returning(
                _T.id, _T.upstream, _T.subject, _T.issuer, _T.method, _T.browser_hash, _T.verifier, _T.expires_at
            )
        )
        async with self._db.transaction() as connection:
            row = (await connection.execute(taken)).one_or_none()
        if row is None or row.expires_at <= self._clock() or row.verifier is None or row.browser_hash is None:
            return None
        try:
            verifier = self._vault.open(bytes(row.verifier), owner=row.id, purpose=PURPOSE).decode()
        except InvalidCiphertext:
            return None  # moved or tampered: as good as unknown
        principal = _principal(row.subject, row.issuer, row.method)
        return StartedLink(row.id, row.upstream, principal, state, verifier, bytes(row.browser_hash))
