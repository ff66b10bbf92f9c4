"""The seams of the authorization server: what the web layer (login and consent pages, OAuth endpoints)
asks of the core, and what the core asks of storage.

The core (``oauth.server.AuthorizationServer``) implements ``AuthorizationService``; the pages module
(``asgi.pages``) only ever talks to this protocol and to ``UserDirectory``. Keeping the seam here lets the
pages be tested against an in-memory service and the core without HTTP.

Errors: every method raises ``OAuthError`` (RFC 6749 §4.1.2.1 / §5.2 codes) for a refusal; an
``OAuthError`` whose ``redirect_uri`` is set may be sent back to the client's redirect URI, one without it
must be shown to the user instead (an unverified ``redirect_uri`` or ``client_id`` is never redirected to).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


class OAuthError(Exception):
    """An OAuth refusal with its RFC 6749 error code; ``description`` is safe to show, never a secret."""

    def __init__(
        self,
        error: str,
        description: str = "",
        *,
        status: int = 400,
        redirect_uri: str | None = None,
        state: str | None = None,
    ) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status
        self.redirect_uri = redirect_uri
        """Set only when the redirect URI was verified for the client: then the error goes back there."""
        self.state = state


@dataclass(frozen=True, slots=True)
class User:
    id: str
    username: str
    roles: frozenset[str] = frozenset()
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class ClientView:
    """What the consent page shows about a client."""

    client_id: str
    name: str
    redirect_host: str
    """Host (and port) of the redirect URI the browser will be sent to."""
    kind: str
    """``registered`` (dynamic registration), ``metadata`` (client ID metadata document) or ``static``."""


@dataclass(frozen=True, slots=True)
class PendingAuthorization:
    """A validated /authorize request waiting for the user to log in and consent."""

    id: str
    """Opaque, unguessable handle the pages carry between login and consent (bound to the browser by CSRF)."""
    client: ClientView
    scopes: tuple[str, ...]
    """Scopes requested (after limiting to what the client may ask for)."""
    scope_descriptions: Mapping[str, str]
    """Each scope in words, for the consent page."""
    resource: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class Consent:
    user_id: str
    client_id: str
    scopes: frozenset[str]
    granted_at: float
    revoked: bool = False
    resource: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)


class AuthorizationService(Protocol):
    """The front channel of the authorization server, as the pages use it."""

    async def begin(self, query: Mapping[str, str]) -> PendingAuthorization:
        """Validate an /authorize request (client, redirect URI, PKCE S256, resource, scopes, state)."""
        ...

    async def pending(self, pending_id: str) -> PendingAuthorization:
        """Look up a pending authorization; ``OAuthError("invalid_request")`` when unknown or expired."""
        ...

    async def approve(self, pending_id: str, user: User, scopes: frozenset[str]) -> str:
        """The user consented: issue the code; returns the redirect URL (code, state, iss)."""
        ...

    async def deny(self, pending_id: str) -> str:
        """The user declined: returns the redirect URL carrying ``error=access_denied`` (and state, iss)."""
        ...

    async def allowed_scopes(self, user: User, pending: PendingAuthorization) -> frozenset[str]:
        """The scopes this user may grant to this request (a subset of ``pending.scopes``)."""
        ...

    async def consent(self, user: User, client_id: str) -> Consent | None:
        """The user's remembered, unrevoked consent for this client, if any."""
        ...


class UserDirectory(Protocol):
    """Local users (argon2id passwords)."""

    async def authenticate(self, username: str, password: str) -> User:
        """The user, or ``OAuthError("access_denied")`` for a wrong password, unknown or disabled user
        (the same error for all three, and the same time taken)."""
        ...

    async def get(self, user_id: str) -> User | None: ...


class ScopePolicy(Protocol):
    """Which of ``requested`` this user may grant ``client_id`` for ``resource`` (the policy engine plugs in
    here: ``policy.authorizer.ScopeGrants``)."""

    def __call__(self, user: User, resource: str, requested: frozenset[str], client_id: str) -> frozenset[str]: ...


def allow_all(user: User, resource: str, requested: frozenset[str], client_id: str) -> frozenset[str]:
    """The default policy: a user may grant every scope the resource offers."""
    return requested
