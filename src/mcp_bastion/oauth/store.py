"""What the authorization server persists, and the one seam (``OAuthStore``) through which it does.

RFC 6749 §4.1.2 (codes are short-lived and single-use; a replayed code should revoke the tokens issued from
it), §10.4 and RFC 9700 §4.14 (refresh token rotation and reuse detection), RFC 7009 (revocation), RFC 7591
(registered client metadata), RFC 7523 §3 (``jti`` of client assertions used once).

Invariants every implementation keeps (the in-memory one in ``memstore``, the SQL one in ``storage``):
- secrets are never stored in plain text: authorization codes, refresh tokens and client secrets arrive
  here as SHA-256 digests; the only recoverable secret, the successor token pair kept for the refresh grace
  window, arrives already sealed (AES-256-GCM, opaque ``bytes``) and is stored as given;
- the security decisions are single atomic steps, safe against concurrent callers and other replicas:
  ``consume_code`` marks a code used exactly once, ``rotate_refresh`` rotates a refresh token exactly once,
  ``take_pending`` hands a pending authorization out exactly once, ``remember_assertion`` accepts a ``jti``
  exactly once;
- the store decides nothing else: expiry, binding and policy checks are the caller's (``oauth.server``),
  with ``now`` passed in, so every implementation behaves the same under a test clock;
- a failing store raises (any exception); it never answers "not revoked" because it could not tell.

Times are POSIX seconds (``float``). Scopes are sets of RFC 6749 §3.3 scope tokens. Records are immutable
values; an implementation returns new records, it never hands out one it may still change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from mcp_bastion.jsonrpc.message import JSONValue


def _strings(value: JSONValue) -> tuple[str, ...]:
    return tuple(item for item in value if isinstance(item, str)) if isinstance(value, list) else ()


ClientKind = Literal["registered", "metadata", "static"]
"""``registered``: RFC 7591 dynamic registration; ``metadata``: a client ID metadata document (the
``client_id`` is its URL; the record is a cache entry with ``expires_at``); ``static``: from config/CLI."""

RotationKind = Literal["rotated", "grace", "reused"]


@dataclass(frozen=True, slots=True)
class ClientRecord:
    """A client known to the authorization server."""

    client_id: str
    kind: ClientKind
    metadata: Mapping[str, JSONValue]
    """RFC 7591 §2 client metadata as validated by ``oauth.registration``: ``redirect_uris``,
    ``grant_types``, ``response_types``, ``token_endpoint_auth_method``, ``client_name``, ``scope``,
    ``jwks`` or ``jwks_uri``, ... Stored as one JSON document."""
    secret_hash: bytes | None
    """SHA-256 of the client secret (``client_secret_basic``/``client_secret_post``), else None."""
    created_at: float
    expires_at: float | None = None
    """For ``metadata`` clients: when the cached document must be fetched again. None: never expires."""

    # Typed views of the validated metadata (``oauth.registration`` guarantees the shapes).
    @property
    def redirect_uris(self) -> tuple[str, ...]:
        return _strings(self.metadata.get("redirect_uris"))

    @property
    def grant_types(self) -> frozenset[str]:
        return frozenset(_strings(self.metadata.get("grant_types")))

    @property
    def auth_method(self) -> str:
        method = self.metadata.get("token_endpoint_auth_method")
        return method if isinstance(method, str) else "client_secret_basic"  # RFC 7591 §2 default

    @property
    def name(self) -> str:
        name = self.metadata.get("client_name")
        return name if isinstance(name, str) and name else self.client_id

    @property
    def scopes(self) -> frozenset[str] | None:
        """The scopes the client registered for, or None when it registered none (no client-side limit)."""
        scope = self.metadata.get("scope")
        return frozenset(scope.split()) if isinstance(scope, str) else None


@dataclass(frozen=True, slots=True)
class PendingRecord:
    """A validated /authorize request waiting for login and consent (RFC 6749 §4.1.1)."""

    id: str
    client_id: str
    redirect_uri: str
    """The redirect URI exactly as the request sent it (already matched against the registered ones)."""
    state: str | None
    code_challenge: str
    """RFC 7636 S256 challenge; the only method we accept, so the method is not stored."""
    resource: str
    """RFC 8707 resource indicator: one of the gateway's MCP endpoints."""
    scopes: frozenset[str]
    created_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class CodeRecord:
    """An authorization code (RFC 6749 §4.1.2), stored by its SHA-256 digest only."""

    code_hash: bytes
    client_id: str
    user_id: str
    redirect_uri: str
    code_challenge: str
    resource: str
    scopes: frozenset[str]
    family_id: str
    """The token family the code's tokens belong to; created together with the code, so a replay can
    revoke it even while the first redemption is still in flight."""
    created_at: float
    expires_at: float
    used_at: float | None = None


@dataclass(frozen=True, slots=True)
class FamilyRecord:
    """One grant: every refresh token rotated from one authorization code, and the access tokens minted
    with them (they carry the family id in their ``sid`` claim)."""

    id: str
    client_id: str
    subject: str
    resource: str
    scopes: frozenset[str]
    """Scopes the user granted; a refresh may narrow but never widen them (RFC 6749 §6)."""
    created_at: float
    expires_at: float
    """Absolute end of the grant: no refresh after this, however often tokens rotated."""
    revoked_at: float | None = None
    reason: str | None = None
    """Why it was revoked (``code_replay``, ``refresh_reuse``, ``revoked_by_client``, ...), for audit."""
    username: str = ""
    """The user's name at login, carried in every access token as ``preferred_username`` (policies use it)."""
    roles: frozenset[str] = frozenset()
    """The user's roles at login, carried as ``roles`` (RFC 9068 §2.2.3.1): a role change applies from the
    next login, and revoking the user's grants applies it at once."""


@dataclass(frozen=True, slots=True)
class RefreshRecord:
    """A refresh token, stored by its SHA-256 digest only."""

    token_hash: bytes
    family_id: str
    created_at: float
    rotated_at: float | None = None
    successor: bytes | None = None
    """Once rotated: the sealed successor pair (refresh token + access token response), so a concurrent
    duplicate refresh inside the grace window gets the same answer. Opaque ciphertext, AAD-bound to this
    token's family and digest; the store never looks inside."""


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    """A user's remembered consent for one client and resource."""

    user_id: str
    client_id: str
    resource: str
    scopes: frozenset[str]
    granted_at: float
    revoked_at: float | None = None


@dataclass(frozen=True, slots=True)
class RotationOutcome:
    """What ``rotate_refresh`` did.

    - ``rotated``: first use; the presented token is now rotated and ``successor`` was stored;
    - ``grace``: the token was already rotated at most ``grace_seconds`` ago: nothing changed, the caller
      answers with the pair sealed in ``record.successor``;
    - ``reused``: the token was rotated longer ago: nothing changed; the caller revokes the family.
    """

    kind: RotationKind
    record: RefreshRecord
    """The presented token's record after the call (``rotated_at`` and ``successor`` set in all three)."""


class OAuthStore(Protocol):
    """Persistence for the authorization server. Every method may raise on a storage failure."""

    # Clients.
    async def put_client(self, record: ClientRecord) -> None:
        """Insert or replace the client with ``record.client_id``."""
        ...

    async def get_client(self, client_id: str) -> ClientRecord | None: ...

    async def delete_client(self, client_id: str) -> bool:
        """Remove the client; True when it existed."""
        ...

    async def list_clients(self) -> Sequence[ClientRecord]: ...

    # Pending authorizations.
    async def put_pending(self, record: PendingRecord) -> None: ...

    async def get_pending(self, pending_id: str) -> PendingRecord | None: ...

    async def take_pending(self, pending_id: str) -> PendingRecord | None:
        """Remove and return the pending authorization: only one caller ever gets it."""
        ...

    # Authorization codes.
    async def put_code(self, record: CodeRecord) -> None: ...

    async def consume_code(self, code_hash: bytes, now: float) -> CodeRecord | None:
        """Mark the code used (``used_at = now``) and return the record *as it was before*: the one call that
        consumed it sees ``used_at is None``; every later call sees the first ``used_at`` (a replay: the
        caller revokes ``family_id``). None when the code is unknown."""
        ...

    # Token families.
    async def put_family(self, record: FamilyRecord) -> None: ...

    async def get_family(self, family_id: str) -> FamilyRecord | None: ...

    async def revoke_family(self, family_id: str, now: float, reason: str) -> bool:
        """Revoke the family (first revocation's time and reason win); True when it exists."""
        ...

    async def revoke_families(self, client_id: str, subject: str, now: float, reason: str) -> int:
        """Revoke every unrevoked family of this client for this subject (consent withdrawn); how many."""
        ...

    # Refresh tokens.
    async def put_refresh(self, record: RefreshRecord) -> None: ...

    async def get_refresh(self, token_hash: bytes) -> RefreshRecord | None: ...

    async def rotate_refresh(
        self, token_hash: bytes, successor: RefreshRecord, sealed_pair: bytes, now: float, grace_seconds: float
    ) -> RotationOutcome | None:
        """Atomically: if the token is unrotated, set its ``rotated_at = now`` and ``successor =
        sealed_pair``, insert ``successor`` and return ``rotated``; if it was rotated at most
        ``grace_seconds`` before ``now`` return ``grace``; otherwise ``reused``. None when unknown."""
        ...

    # Consents.
    async def put_consent(self, record: ConsentRecord) -> None:
        """Insert or replace the consent for (user_id, client_id, resource)."""
        ...

    async def get_consents(self, user_id: str, client_id: str) -> Sequence[ConsentRecord]:
        """The user's consents for this client, revoked ones included, newest first."""
        ...

    async def revoke_consents(self, user_id: str, client_id: str, now: float) -> int:
        """Revoke every unrevoked consent of the user for the client; returns how many."""
        ...

    # Revocation of access tokens, and the resource side's check.
    async def revoke_access_token(self, jti: str, expires_at: float) -> None:
        """Remember ``jti`` as revoked until the token's own expiry (after that it is refused anyway)."""
        ...

    async def is_token_revoked(self, jti: str | None, family_id: str | None, now: float) -> bool:
        """True when the ``jti`` is revoked, or the family is revoked, expired or unknown. One read, since
        the resource side asks on every request."""
        ...

    # Client assertions (RFC 7523 §3: a ``jti`` may be used only once).
    async def remember_assertion(self, client_id: str, jti: str, expires_at: float, now: float) -> bool:
        """Record the assertion's ``jti`` until ``expires_at``; False when it was already recorded (a
        replay). Entries past their ``expires_at`` (compared with ``now``) no longer count."""
        ...

    async def purge(self, now: float) -> int:
        """Delete what expired before ``now`` (pending, codes, families and their refresh tokens, revoked
        jtis, assertion jtis, cached metadata clients); returns how many rows went."""
        ...
