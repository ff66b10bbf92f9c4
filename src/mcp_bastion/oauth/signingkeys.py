"""The authorization server's token-signing keys: generated, stored sealed in the database, rotated.

RFC 7517 §5 (the JWK Set we publish), RFC 7638 (``kid`` = thumbprint), RFC 7518 §3.4 (ES256), RFC 9068 §4
(resource servers find the key by ``kid``), RFC 8725 §3.1 (each published key names its one algorithm).

A ``SigningKeyRing`` is a ``TokenSigner`` (the same ``issuer``/``kid``/``public_keys()``/``mint()`` as
``localissuer.LocalIssuer``) whose keys live in the ``signing_keys`` table, so every replica signs with the
same key and publishes the same set, and a rotation made anywhere (``mcp-bastion keys rotate``) reaches all.

Key life: *current* (signs; ``retired_at`` and ``expires_at`` NULL) → *retired* by ``rotate`` (no longer
signs, still published) → *expired* at ``expires_at`` (gone from the JWKS; the row, and with it the sealed
private key, is deleted by the next rotation). A retired key stays published for ``retire_window``::

    max_token_lifetime + leeway + max_signing_staleness

— the longest token it can have signed, the verifiers' clock leeway, and the time another replica may keep
signing with it before it notices the rotation (``mint`` refuses to sign from a view older than
``max_signing_staleness``; ``maintain()`` refreshes every ``refresh_interval`` to stay well inside it).

Invariants:
- a private key is never written unsealed: the row holds a vault blob for (owner = kid, purpose
  ``signing-key``); the key ring unseals it only to sign and to derive the public key;
- database write access alone cannot add a trusted key: the published key of each row is *derived* from
  its sealed private half and its thumbprint must equal the row's ``kid``; a row that fails any check
  (cannot be unsealed, other kid, other curve or algorithm, a ``public_jwk`` column that disagrees) is left
  out and logged by kid only, never trusted;
- ``mint`` refuses lifetimes over ``max_token_lifetime`` (the retire window would not cover them);
- the ``KeySource`` view re-reads the table every ``refresh_interval``, and on an unknown ``kid`` once per
  ``UNKNOWN_KID_INTERVAL_SECONDS`` at most: lookups of unknown kids wait for one shared read (invented kids
  cannot make it hammer the database, and a new key's tokens wait instead of being refused); a view that
  could not be refreshed for ``max_stale`` raises ``Unavailable`` instead of trusting old data;
- two rings creating the first key at once on PostgreSQL may both insert one; every ring then signs with
  the newest (``created_at``, then ``kid``), both stay published, and the next rotation retires both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, final

import anyio
import orjson
from joserfc.errors import JoseError
from joserfc.jwk import ECKey
from sqlalchemy import delete, insert, or_, select, update

from mcp_bastion.errors import ConfigError, Unavailable
from mcp_bastion.oauth.jwks import KeySet, PublicKey, RefreshSchedule
from mcp_bastion.oauth.localissuer import LocalIssuer
from mcp_bastion.storage.db import Database
from mcp_bastion.storage.models import SigningKeyRow
from mcp_bastion.vault.envelope import InvalidCiphertext, Vault

logger = logging.getLogger(__name__)

ALGORITHM: Final = "ES256"
CURVE: Final = "P-256"
PURPOSE: Final = "signing-key"
"""The vault purpose of sealed private keys; the owner is the key's ``kid``."""
MAX_TOKEN_LIFETIME_SECONDS: Final = 3600
"""Default cap on minted lifetimes: the settings' cap on ``oauth.access_token_lifetime``."""
DEFAULT_LEEWAY_SECONDS: Final = 30
REFRESH_INTERVAL_SECONDS: Final = 30.0
UNKNOWN_KID_INTERVAL_SECONDS: Final = 1.0
MAX_SIGNING_STALENESS_SECONDS: Final = 300.0
MAX_STALE_SECONDS: Final = 600.0
_PUBLIC_MEMBERS: Final = ("kty", "crv", "x", "y")


@dataclass(frozen=True, slots=True)
class SigningKeyInfo:
    """A row of ``signing_keys`` without key material (``mcp-bastion keys list``)."""

    kid: str
    alg: str
    created_at: float
    retired_at: float | None
    expires_at: float | None


@dataclass(frozen=True, slots=True)
class _Published:
    key: PublicKey
    expires_at: float | None


@dataclass(frozen=True, slots=True)
class _View:
    signer: LocalIssuer
    published: tuple[_Published, ...]


_COLUMNS: Final = (
    SigningKeyRow.kid,
    SigningKeyRow.alg,
    SigningKeyRow.public_jwk,
    SigningKeyRow.private_jwk,
    SigningKeyRow.created_at,
    SigningKeyRow.retired_at,
    SigningKeyRow.expires_at,
)


async def list_keys(db: Database) -> list[SigningKeyInfo]:
    """Every stored signing key, oldest first (no unsealing: needs no vault)."""
    query = select(
        SigningKeyRow.kid,
        SigningKeyRow.alg,
        SigningKeyRow.created_at,
        SigningKeyRow.retired_at,
        SigningKeyRow.expires_at,
    ).order_by(SigningKeyRow.created_at, SigningKeyRow.kid)
    async with db.read() as connection:
        rows = (await connection.execute(query)).all()
    return [SigningKeyInfo(*row) for row in rows]


@final
class SigningKeyRing:
    """ES256 signing keys in the database, private halves sealed by the vault. Implements ``TokenSigner``.

    ``await load()`` once before use (creates the first key if there is none); run ``maintain()`` as a
    background task so the ring follows rotations made by other processes.
    """

    def __init__(
        self,
        db: Database,
        vault: Vault,
        issuer: str,
        *,
        max_token_lifetime: int = MAX_TOKEN_LIFETIME_SECONDS,
        leeway_seconds: int = DEFAULT_LEEWAY_SECONDS,
        refresh_interval: float = REFRESH_INTERVAL_SECONDS,
        max_signing_staleness: float = MAX_SIGNING_STALENESS_SECONDS,
        max_stale: float = MAX_STALE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not issuer:
            raise ConfigError("signing key ring: 'issuer' must not be empty")
        if max_token_lifetime <= 0 or leeway_seconds < 0:
            raise ConfigError("signing key ring: max_token_lifetime must be positive, leeway not negative")
        if not 0 < refresh_interval < max_signing_staleness <= max_stale:
            raise ConfigError("signing key ring: need 0 < refresh_interval < max_signing_staleness <= max_stale")
        self.issuer: Final = issuer
        self._db = db
        self._vault = vault
        self._max_lifetime = max_token_lifetime
        self._max_signing_staleness = max_signing_staleness
        self.retire_window: Final = float(max_token_lifetime + leeway_seconds) + max_signing_staleness
        """Seconds a retired key stays published."""
        self._clock = clock
        self._schedule = RefreshSchedule(
            refresh_interval=refresh_interval, min_refetch_interval=UNKNOWN_KID_INTERVAL_SECONDS, max_stale=max_stale
        )
        self._lock = asyncio.Lock()
        self._view: _View | None = None
        self._opened: dict[str, tuple[bytes, ECKey]] = {}
        """kid -> (sealed blob, private key): rows already unsealed and checked, so refreshes stay cheap."""
        self._keyset_cache: tuple[tuple[str, ...], KeySet] | None = None
        self._reread_task: asyncio.Task[None] | None = None
        self._reread_started: float | None = None

    # -- TokenSigner ---------------------------------------------------------------------------------

    @property
    def kid(self) -> str:
        """The ``kid`` of the key that signs now."""
        return self._loaded().signer.kid

    def public_keys(self) -> KeySet:
        """Every key a token of ours may carry now: the current key and retired keys not yet expired."""
        now = self._clock()
        live = [item.key for item in self._loaded().published if item.expires_at is None or item.expires_at > now]
        kids = tuple(str(key.kid) for key in live)
        cached = self._keyset_cache
        if cached is None or cached[0] != kids:
            cached = (kids, KeySet(live))
            self._keyset_cache = cached
        return cached[1]

    def mint(
        self,
        subject: str,
        audience: str,
        *,
        scope: Iterable[str] = (),
        lifetime: int = 300,
        client_id: str = "demo",
        now: float | None = None,
        extra: Mapping[str, object] | None = None,
    ) -> str:
        """An RFC 9068 access token signed with the current key (claims as ``LocalIssuer.mint``).

        Raises ``ValueError`` for a lifetime over ``max_token_lifetime``, and ``Unavailable`` when the ring
        has not been refreshed for ``max_signing_staleness`` (it could be signing with a retired key).
        """
        if lifetime > self._max_lifetime:
            raise ValueError(f"lifetime {lifetime}: the key ring signs at most {self._max_lifetime} seconds")
        view = self._loaded()
        fetched_at = self._schedule.fetched_at
        assert fetched_at is not None  # set together with the view
        if self._clock() - fetched_at > self._max_signing_staleness:
            raise Unavailable("signing keys not refreshed recently: is maintain() running, is the database up?")
        return view.signer.mint(
            subject, audience, scope=scope, lifetime=lifetime, client_id=client_id, now=now, extra=extra
        )

    # -- life cycle -----------------------------------------------------------------------------------

    async def load(self) -> None:
        """Read the keys, creating the first one if the table has no current key. Raises ``ConfigError``
        when no stored key can be used (e.g. a different vault key file) and ``Unavailable`` when the
        database cannot be read."""
        with anyio.CancelScope(shield=True):  # see ``_refresh_recording``
            async with self._db.transaction() as connection:
                query = select(SigningKeyRow.kid).where(SigningKeyRow.retired_at.is_(None))
                if (await connection.execute(query)).first() is None:
                    row = self._new_row(self._clock())
                    await connection.execute(insert(SigningKeyRow).values(row))
                    logger.info("created signing key %s", row["kid"])
        await self.refresh()

    async def rotate(self, now: float | None = None, *, revoke_previous: bool = False) -> str:
        """Make a new key current and return its ``kid``. Previous keys retire and stay published for
        ``retire_window``; with ``revoke_previous`` (a key leaked) they are deleted at once, and every
        token they signed stops verifying as soon as each process refreshes."""
        now = self._clock() if now is None else now
        row = self._new_row(now)
        table = SigningKeyRow
        with anyio.CancelScope(shield=True):  # see ``_refresh_recording``
            async with self._db.transaction() as connection:
                await connection.execute(delete(table).where(table.expires_at.is_not(None), table.expires_at <= now))
                if revoke_previous:
                    await connection.execute(delete(table))
                else:
                    await connection.execute(
                        update(table)
                        .where(table.retired_at.is_(None))
                        .values(retired_at=now, expires_at=now + self.retire_window)
                    )
                await connection.execute(insert(table).values(row))
        logger.info(
            "rotated signing keys: %s signs now (previous %s)", row["kid"], "deleted" if revoke_previous else "retired"
        )
        await self.refresh()
        return str(row["kid"])

    async def refresh(self) -> None:
        """Re-read the table now. Raises ``Unavailable`` (database) or ``ConfigError`` (no usable key)."""
        async with self._lock:
            await self._refresh_recording(self._clock())

    async def maintain(self) -> None:
        """Refresh every ``refresh_interval`` until cancelled; failures are logged, the old view is kept."""
        while True:
            await asyncio.sleep(self._schedule.refresh_interval)
            try:
                await self.refresh()
            except (Unavailable, ConfigError) as exc:
                logger.warning("signing keys not refreshed: %s", exc.detail)

    async def aclose(self) -> None:
        """Stop a pending unknown-kid read (before the database closes)."""
        task = self._reread_task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def key_source(self) -> RingKeySource:
        """The ``jwks.KeySource`` for a ``TrustedIssuer`` of this issuer (follows rotations)."""
        return RingKeySource(self)

    # -- internals ------------------------------------------------------------------------------------

    def _loaded(self) -> _View:
        if self._view is None:
            raise RuntimeError("SigningKeyRing.load() has not run")
        return self._view

    async def _key_for(self, kid: str | None) -> PublicKey | None:
        now = self._clock()
        if self._view is not None:
            key = self.public_keys().get(kid)
            if key is None:
                # A kid we do not know: a key another process created since our last read, or an invented
                # one. Every lookup meanwhile waits for one shared read that starts no sooner than
                # ``min_refetch_interval`` after the previous one: invented kids cost at most one read per
                # interval, and a token of a genuinely new key is accepted after at most that delay instead of
                # being refused (a 401 would make its client throw away a good token and log in again).
                await asyncio.shield(self._reread(now))
                if not self._schedule.usable(self._clock()):
                    raise Unavailable("signing keys could not be read from the database")
                return self.public_keys().get(kid)
            if not self._schedule.fetch_due(now, unknown_kid=False):
                return key
        async with self._lock:
            now = self._clock()
            if self._schedule.fetch_due(now, unknown_kid=self._view is None):
                try:
                    await self._refresh_recording(now)
                except (Unavailable, ConfigError) as exc:
                    logger.warning("signing keys not refreshed: %s", exc.detail)
            if self._view is None or not self._schedule.usable(now):
                raise Unavailable("signing keys could not be read from the database")
            return self.public_keys().get(kid)

    def _reread(self, asked_at: float) -> asyncio.Task[None]:
        """The shared read for unknown kids asked about at ``asked_at``: the pending one if its read has not
        started before that moment, else a new one scheduled after the throttle interval."""
        task = self._reread_task
        started = self._reread_started
        if task is not None and not task.done() and (started is None or started >= asked_at):
            return task
        attempted = self._schedule.attempted_at
        interval = self._schedule.min_refetch_interval
        delay = 0.0 if attempted is None else min(interval, max(0.0, attempted + interval - asked_at))
        self._reread_started = None
        self._reread_task = asyncio.create_task(self._reread_after(delay))
        return self._reread_task

    async def _reread_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        async with self._lock:
            self._reread_started = now = self._clock()
            try:
                await self._refresh_recording(now)
            except (Unavailable, ConfigError) as exc:
                logger.warning("signing keys not refreshed: %s", exc.detail)

    async def _refresh_recording(self, now: float) -> None:
        self._schedule.attempted_at = now
        table = SigningKeyRow
        query = (
            select(*_COLUMNS)
            .where(or_(table.expires_at.is_(None), table.expires_at > now))
            .order_by(table.created_at, table.kid)
        )
        # Shielded: a cancellation landing inside the driver's round trip (a client hanging up while its
        # lookup refreshes, shutdown stopping ``maintain``) can wedge an aiosqlite connection for good.
        with anyio.CancelScope(shield=True):
            async with self._db.read() as connection:
                rows = (await connection.execute(query)).all()
        self._view = self._build(rows)
        self._schedule.fetched_at = now

    def _build(self, rows: Sequence[Any]) -> _View:
        opened: dict[str, tuple[bytes, ECKey]] = {}
        published: list[_Published] = []
        current: ECKey | None = None
        for kid, alg, public_jwk, sealed, _created_at, retired_at, expires_at in rows:
            private = self._open(kid, alg, public_jwk, bytes(sealed))
            if private is None:
                continue
            opened[kid] = (bytes(sealed), private)
            public = ECKey.import_key({**_public_members(private), "kid": kid, "alg": ALGORITHM, "use": "sig"})
            published.append(_Published(public, expires_at))
            if retired_at is None:
                current = private  # rows come oldest first: the newest unretired key wins
        self._opened = opened
        if current is None:
            raise ConfigError(
                "no usable signing key in the database: the vault cannot open any current key (a different KEK "
                "file?); restore it, or run `mcp-bastion keys rotate --revoke-previous`"
            )
        return _View(LocalIssuer(current, self.issuer), tuple(published))

    def _open(self, kid: str, alg: str, public_jwk: object, sealed: bytes) -> ECKey | None:
        """The checked private key of one row, or None (logged) when the row cannot be trusted."""
        cached = self._opened.get(kid)
        if cached is not None and cached[0] == sealed:
            key = cached[1]  # only the unsealing is cached: the row's other columns are checked every time
        else:
            try:
                plaintext = self._vault.open(sealed, owner=kid, purpose=PURPOSE)
                key = ECKey.import_key(orjson.loads(plaintext))
            except (InvalidCiphertext, JoseError, orjson.JSONDecodeError, ValueError, TypeError, KeyError):
                logger.error("signing key %r: its private key cannot be opened; left out", kid)
                return None
        if (
            alg != ALGORITHM
            or not key.is_private
            or key.curve_name != CURVE
            or key.thumbprint() != kid
            or not isinstance(public_jwk, dict)
            or {name: public_jwk.get(name) for name in _PUBLIC_MEMBERS} != _public_members(key)
        ):
            logger.error("signing key %r: stored row is inconsistent (altered?); left out", kid)
            return None
        return key

    def _new_row(self, now: float) -> dict[str, object]:
        key = ECKey.generate_key(CURVE, private=True)
        kid = key.thumbprint()
        private = {**key.as_dict(private=True), "kid": kid}
        return {
            "kid": kid,
            "alg": ALGORITHM,
            "public_jwk": {**_public_members(key), "kid": kid, "alg": ALGORITHM, "use": "sig"},
            "private_jwk": self._vault.seal(orjson.dumps(private), owner=kid, purpose=PURPOSE),
            "created_at": now,
            "retired_at": None,
            "expires_at": None,
        }


def _public_members(key: ECKey) -> dict[str, str]:
    public = key.as_dict(private=False)
    return {name: str(public[name]) for name in _PUBLIC_MEMBERS}


@final
class RingKeySource:
    """``jwks.KeySource`` over a ``SigningKeyRing``: sees rotations made by any process sharing its database."""

    __slots__ = ("_ring",)

    def __init__(self, ring: SigningKeyRing) -> None:
        self._ring = ring

    async def key_for(self, kid: str | None) -> PublicKey | None:
        """The published key with this ``kid``, re-reading the table when due; ``Unavailable`` when stale."""
        return await self._ring._key_for(kid)
