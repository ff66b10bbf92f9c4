"""The login session: a signed cookie binding one browser's login to one pending authorization.

After a successful login the browser receives ``<prefix>bastion-login-<tag>`` whose value is
``base64url(JSON payload) "." base64url(HMAC-SHA256(key, "session", payload))``. The payload holds the user
id, the pending authorization id, an expiry and a random nonce the consent form's CSRF token is bound to.
The consent step accepts only a session whose MAC checks, which has not expired, and whose pending id is the
one the form names: a consent form replayed from another browser (or a login for another authorization)
fails. The cookie name carries a MAC-derived tag of the pending id, so two authorizations running in two
tabs of one browser do not overwrite each other's session.

The cookie is HttpOnly, SameSite=Lax, and when ``secure`` also ``Secure`` with the ``__Host-`` prefix (no
Domain, Path=/): only this exact origin, over HTTPS, can set or read it. It never outlives the pending
authorization and is deleted when the user approves or denies.

A user who logged in through an external IdP (``federated.py``) is not in the local directory: the session
then also carries what the IdP said (the provider's name, the username, the mapped roles) under the same MAC,
so the consent step needs neither the IdP nor a local copy of the user.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from starlette.responses import Response

from mcp_bastion.asgi.pages.csrf import Signer, b64decode, b64encode, new_nonce

SESSION_TTL = 600.0
"""Upper bound on a login session's life, in seconds; the pending authorization's expiry usually comes first."""


@dataclass(frozen=True, slots=True)
class FederatedIdentity:
    """Who the external IdP said the user is, as of the login."""

    provider: str
    """The IdP's name in the settings (``oauth.federation[].name``)."""
    username: str
    roles: frozenset[str]


@dataclass(frozen=True, slots=True)
class LoginSession:
    user_id: str
    pending_id: str
    expires_at: float
    nonce: str
    """Random per login; the consent form's CSRF token is a MAC over it."""
    federated: FederatedIdentity | None = None
    """Set when the user logged in through an external IdP instead of the local directory."""


class InvalidSession(Exception):
    """The cookie is missing, forged, expired or for another authorization (deliberately not saying which)."""


@dataclass(frozen=True, slots=True)
class CookieJar:
    """Names and attributes of the pages' cookies."""

    secure: bool

    @property
    def prefix(self) -> str:
        # Browsers accept a __Host- cookie only with Secure, Path=/ and no Domain.
        return "__Host-" if self.secure else ""

    @property
    def browser(self) -> str:
        """The browser nonce the login form's CSRF token is bound to."""
        return f"{self.prefix}bastion-browser"

    @property
    def federation(self) -> str:
        """The federated login state. Scoped to one callback path, so it cannot carry ``__Host-`` (which
        demands Path=/); ``__Secure-`` still keeps plain HTTP from setting it."""
        return f"{'__Secure-' if self.secure else ''}bastion-federation"

    def set(self, response: Response, name: str, value: str, *, max_age: int | None, path: str = "/") -> None:
        """Set a cookie; ``max_age=None`` makes it a browser-session cookie."""
        response.set_cookie(name, value, max_age=max_age, path=path, secure=self.secure, httponly=True, samesite="lax")

    def delete(self, response: Response, name: str, *, path: str = "/") -> None:
        # The deletion must repeat Secure and Path or a browser ignores it for a __Host- cookie.
        response.delete_cookie(name, path=path, secure=self.secure, httponly=True, samesite="lax")


class Sessions:
    """Seals and opens login sessions."""

    PURPOSE = "session"

    def __init__(self, signer: Signer, jar: CookieJar) -> None:
        self._signer = signer
        self.jar = jar

    def cookie_name(self, pending_id: str) -> str:
        tag = self._signer.token("session-cookie-name", pending_id)[:16]
        return f"{self.jar.prefix}bastion-login-{tag}"

    def new(
        self,
        user_id: str,
        pending_id: str,
        *,
        now: float,
        pending_expires_at: float,
        federated: FederatedIdentity | None = None,
    ) -> LoginSession:
        expires_at = min(now + SESSION_TTL, pending_expires_at)
        return LoginSession(user_id, pending_id, expires_at, new_nonce(), federated)

    def seal(self, session: LoginSession) -> str:
        data: dict[str, object] = {
            "u": session.user_id,
            "p": session.pending_id,
            "e": session.expires_at,
            "n": session.nonce,
        }
        if session.federated is not None:
            identity = session.federated
            data["f"] = [identity.provider, identity.username, sorted(identity.roles)]
        payload = json.dumps(data, separators=(",", ":"))
        body = b64encode(payload.encode("utf-8"))
        return f"{body}.{self._signer.token(self.PURPOSE, body)}"

    def open(self, cookie: str | None, pending_id: str, *, now: float) -> LoginSession:
        """The session in ``cookie`` if it is genuine, unexpired and for ``pending_id``; else ``InvalidSession``."""
        if not cookie or cookie.count(".") != 1:
            raise InvalidSession
        body, mac = cookie.split(".")
        if not self._signer.verify(mac, self.PURPOSE, body):
            raise InvalidSession
        try:
            data = json.loads(b64decode(body))
            federated = _identity(data["f"]) if "f" in data else None
            session = LoginSession(data["u"], data["p"], data["e"], data["n"], federated)
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidSession from exc
        # The MAC already vouches for the payload; the checks below are about *which* session it is.
        if session.pending_id != pending_id or not now < session.expires_at:
            raise InvalidSession
        return session


def _identity(value: object) -> FederatedIdentity:
    # The MAC vouches that we wrote this; the shape is still checked, as for any parsed input.
    if not isinstance(value, list) or len(value) != 3:
        raise ValueError("federated identity")
    provider, username, roles = value
    if not (isinstance(provider, str) and isinstance(username, str) and isinstance(roles, list)):
        raise ValueError("federated identity")
    if not all(isinstance(role, str) for role in roles):
        raise ValueError("federated identity")
    return FederatedIdentity(provider, username, frozenset(roles))
