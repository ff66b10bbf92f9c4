"""``upstreams.<name>.auth`` with ``mode = "oauth"``: the gateway is an OAuth client of the upstream's own
authorization server, and each user links their upstream account once.

The first call of a user without tokens is refused with MCP's URL elicitation error (-32042) carrying a
link to the gateway (``/upstream-auth/link/<id>``). There the user signs in *as the gateway user the link
was made for* (the account-linking defence: a link mailed to someone else is useless to them), the
browser gets a random cookie whose digest is stored with the link, and is sent to the upstream's
authorization endpoint (code + PKCE S256, ``state``). The callback only completes in the browser holding
that cookie, so an attacker cannot make a victim's browser finish the attacker's flow and link the
victim's upstream account to the attacker. The tokens are sealed by the vault per (upstream, user),
refreshed when they expire, and the user is sent through consent again when refreshing fails.

RFC 6749 §4.1 and §6, RFC 7636 (S256), RFC 9728 (the upstream's protected-resource metadata names its
authorization server, when no ``issuer`` is configured), RFC 8414 / OIDC Discovery (the AS metadata, issuer checked),
RFC 9207 (``iss`` in the callback checked when present), RFC 8707 (``resource``, when configured).

Invariants:
- a pending link is single-use, expires after ``LINK_SECONDS``, and belongs to one principal and upstream;
- pending links live in the database (``LinkStore``), so the replica that made a link, the one showing its
  page and the one receiving the callback may all differ; nothing there needs a per-replica key;
- tokens never leave the gateway except to the upstream (as Bearer) and the refresh token to the AS;
- failures of the AS are ``Unavailable`` (5xx, unreachable) or a fresh consent (4xx on refresh).
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import secrets
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol, final
from urllib.parse import quote_plus, urlencode, urlsplit

import aiohttp
import orjson

from mcp_bastion.delegation.remote import check_url, json_answer, session
from mcp_bastion.delegation.static import Header
from mcp_bastion.delegation.store import CredentialStore
from mcp_bastion.errors import ConfigError, Unavailable, UpstreamAuthorizationRequired
from mcp_bastion.exchange import Principal
from mcp_bastion.oauth import grants, pkce
from mcp_bastion.vault.envelope import InvalidCiphertext

LINK_SECONDS: Final = 600.0
MAX_LINKS_PER_PRINCIPAL: Final = 10
"""Pending links one user may hold; each refused call makes one, so a retrying client would pile them up."""
EARLY_SECONDS: Final = 30.0
MAX_ANSWER_BYTES: Final = 256 * 1024
CALLBACK_PATH: Final = "/upstream-auth/callback"
REGISTRATION_KEY: Final = "\x00client-registration"
"""Where a dynamic registration is kept (sealed) in the upstream's credential rows: never a principal key,
which always starts with an issuer."""
LINK_PATH: Final = "/upstream-auth/link/"


@dataclass(frozen=True, slots=True)
class PendingLink:
    """A link made for one principal and upstream, not yet signed in for."""

    id: str
    upstream: str
    principal: Principal
    form_token: str
    """The sign-in form's CSRF token (the same on every replica: it is stored with the link)."""


@dataclass(frozen=True, slots=True)
class StartedLink:
    """A link whose user signed in: what the authorization request and the callback need."""

    id: str
    upstream: str
    principal: Principal
    state: str
    verifier: str
    browser_digest: bytes
    """SHA-256 of the cookie given to the browser that signed in (the cookie itself is never stored)."""


class LinkStore(Protocol):
    """Pending links, shared by every replica (``storage.linkstore.SQLLinkStore``).

    ``create`` keeps at most ``MAX_LINKS_PER_PRINCIPAL`` links per principal (the oldest go first), so one
    user cannot push out another's; links expire ``LINK_SECONDS`` after ``create`` (wall clock);
    ``take_by_state`` is atomic: of concurrent takes, on any replica, exactly one gets the link.
    """

    async def create(self, upstream: str, principal: Principal) -> PendingLink: ...

    async def get(self, link_id: str) -> PendingLink | None: ...

    async def mark_started(self, link: PendingLink) -> tuple[StartedLink, str] | None:
        """The user signed in for ``link``: a fresh ``state`` and PKCE verifier, and the cookie value for
        their browser; None when the link expired or was taken meanwhile. Signing in again restarts it
        (the earlier ``state`` stops working)."""
        ...

    async def take_by_state(self, state: str) -> StartedLink | None:
        """The started link with this ``state``, removed (single use); None if unknown or expired."""
        ...


def new_secrets() -> tuple[str, str, str]:
    """A fresh ``state``, PKCE verifier (RFC 7636 §4.1: 43–128 characters) and browser cookie value."""
    return secrets.token_urlsafe(24), secrets.token_urlsafe(48), secrets.token_urlsafe(32)


def same_browser(link: StartedLink, cookie: str) -> bool:
    """Whether ``cookie`` is the one given to the browser that signed in for ``link``."""
    return hmac.compare_digest(grants.digest(cookie), link.browser_digest)


@dataclass(frozen=True, slots=True)
class ServerEndpoints:
    authorization: str
    token: str
    issuer: str
    registration: str | None = None


@final
class UpstreamOAuth:
    """``delegation.static.UpstreamAuth`` for one upstream, plus what the link pages need."""

    def __init__(
        self,
        *,
        upstream: str,
        issuer: str | None,
        client_id: str | None,
        client_secret: str | None,
        scopes: tuple[str, ...],
        resource: str | None,
        gateway_base: str,
        store: CredentialStore,
        upstream_url: str | None = None,
        links: LinkStore,
        ca_bundle: Path | None = None,
        allow_insecure_http: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.upstream = upstream
        self.issuer: str | None = (
            check_url(issuer, allow_insecure_http, f"upstreams.{upstream}.auth.issuer").rstrip("/") if issuer else None
        )
        """The AS; None: found from the upstream's RFC 9728 protected-resource metadata at first use."""
        self._upstream_url = upstream_url
        self._allow_http = allow_insecure_http
        self._client_id = client_id
        self._client_secret = client_secret
        """None: registered dynamically (RFC 7591) at first use and kept sealed (``REGISTRATION_KEY``)."""
        self._registering = asyncio.Lock()
        self._scopes = " ".join(scopes)
        self._resource = resource
        self.redirect_uri = gateway_base + CALLBACK_PATH
        self._gateway_base = gateway_base
        self._store = store
        self.links = links
        self._ssl = ssl.create_default_context(cafile=str(ca_bundle)) if ca_bundle is not None else None
        self._clock = clock
        self._endpoints: ServerEndpoints | None = None
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"UpstreamOAuth({self.upstream!r}, issuer={self.issuer!r})"

    # -- UpstreamAuth -----------------------------------------------------------------------------------

    async def headers(self, principal: Principal) -> list[Header]:
        tokens = await self._tokens(principal)
        if tokens is None:
            raise await self._consent(principal, "no tokens yet")
        access, refresh, expires_at = tokens
        if expires_at - EARLY_SECONDS > self._clock():
            return [(b"authorization", b"Bearer " + access.encode("ascii"))]
        if refresh:
            renewed = await self._refresh(principal, refresh)
            if renewed is not None:
                return [(b"authorization", b"Bearer " + renewed.encode("ascii"))]
        raise await self._consent(principal, "tokens expired")

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- the link flow (pages) --------------------------------------------------------------------------

    async def authorization_url(self, link: StartedLink) -> str:
        endpoints = await self._discover()
        challenge = pkce.s256(link.verifier)
        client_id, _ = await self._client()
        query = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": self.redirect_uri,
            "state": link.state,
            "code_challenge": challenge,
            "code_challenge_method": pkce.METHOD,
        }
        if self._scopes:
            query["scope"] = self._scopes
        if self._resource:
            query["resource"] = self._resource
        separator = "&" if urlsplit(endpoints.authorization).query else "?"
        return endpoints.authorization + separator + urlencode(query)

    async def complete(self, link: StartedLink, code: str, iss: str | None) -> None:
        """Redeem the code for ``link``'s user and store the tokens; ``Unavailable`` or ``ValueError``."""
        endpoints = await self._discover()
        if iss is not None and iss.rstrip("/") != endpoints.issuer.rstrip("/"):
            raise ValueError("the answer names another issuer (RFC 9207)")
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "code_verifier": link.verifier,
        }
        if self._resource:
            form["resource"] = self._resource
        answer = await self._token_request(form)
        if answer is None:
            raise ValueError("the authorization server refused the code")
        await self._save(link.principal, answer, None)

    # -- internals ----------------------------------------------------------------------------------------

    async def _consent(self, principal: Principal, why: str) -> UpstreamAuthorizationRequired:
        link = await self.links.create(self.upstream, principal)
        url = self._gateway_base + LINK_PATH + link.id
        message = f"Sign in to {self.upstream} once to let the gateway call it for you."
        return UpstreamAuthorizationRequired(
            f"{self.upstream}: {why}", url=url, elicitation_id=link.id, message=message
        )

    async def _tokens(self, principal: Principal) -> tuple[str, str | None, float] | None:
        try:
            raw = await self._store.secret_for(self.upstream, principal.key)
        except InvalidCiphertext:
            return None  # moved or tampered: treated as none, consent again
        if raw is None:
            return None
        try:
            data = orjson.loads(raw)
            access, refresh, expires_at = data["access_token"], data.get("refresh_token"), data["expires_at"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return None
        if not isinstance(access, str) or not isinstance(expires_at, int | float):
            return None
        return access, refresh if isinstance(refresh, str) else None, float(expires_at)

    async def _refresh(self, principal: Principal, refresh: str) -> str | None:
        answer = await self._token_request({"grant_type": "refresh_token", "refresh_token": refresh})
        if answer is None:
            return None
        return await self._save(principal, answer, refresh)

    async def _save(self, principal: Principal, answer: Mapping[str, object], old_refresh: str | None) -> str:
        access = answer.get("access_token")
        if not isinstance(access, str) or not access.isascii() or not access.isprintable():
            raise Unavailable(f"{self.upstream}: the authorization server gave no usable access_token")
        expires_in = answer.get("expires_in")
        lifetime = (
            float(expires_in) if isinstance(expires_in, int | float) and not isinstance(expires_in, bool) else 300.0
        )
        refresh = answer.get("refresh_token")
        record = {
            "access_token": access,
            "refresh_token": refresh if isinstance(refresh, str) else old_refresh,  # RFC 6749 §6: may be kept
            "expires_at": self._clock() + lifetime,
        }
        await self._store.put(self.upstream, principal.key, orjson.dumps(record))
        return access

    async def _token_request(self, form: dict[str, str]) -> dict[str, object] | None:
        """The token endpoint's JSON answer; None when it refuses (4xx); ``Unavailable`` otherwise."""
        endpoints = await self._discover()
        headers = {"Accept": "application/json"}
        client_id, client_secret = await self._client()
        if client_secret is not None:
            pair = f"{quote_plus(client_id)}:{quote_plus(client_secret)}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        else:
            form = {**form, "client_id": client_id}
        status, body = await self._post(endpoints.token, form, headers)
        if 400 <= status < 500:
            return None
        answer = json_answer(body, MAX_ANSWER_BYTES)
        if status != 200 or not isinstance(answer, dict):
            raise Unavailable(f"{self.upstream}: token endpoint answered HTTP {status}")
        return answer

    async def _protected_resource_issuer(self) -> str:
        """RFC 9728: the upstream's protected-resource metadata names its authorization server(s); the
        document's ``resource`` must be the upstream itself (§3.3), else it could send us elsewhere."""
        url = self._upstream_url
        if url is None:
            raise ConfigError(f"upstreams.{self.upstream}.auth: give issuer (no upstream URL to discover it from)")
        parts = urlsplit(url)
        path = parts.path.rstrip("/")
        well_known = f"{parts.scheme}://{parts.netloc}/.well-known/oauth-protected-resource{path}"
        status, body = await self._get(well_known)
        document = json_answer(body, MAX_ANSWER_BYTES) if status == 200 else None
        if not isinstance(document, dict) or document.get("resource") != url:
            raise Unavailable(f"{self.upstream}: no protected-resource metadata for {url} at {well_known}")
        servers = document.get("authorization_servers")
        if not isinstance(servers, list) or not servers or not isinstance(servers[0], str):
            raise Unavailable(f"{self.upstream}: its protected-resource metadata names no authorization server")
        return check_url(servers[0], self._allow_http, f"upstreams.{self.upstream}: authorization server").rstrip("/")

    async def _discover(self) -> ServerEndpoints:
        if self._endpoints is not None:
            return self._endpoints
        if self.issuer is None:
            self.issuer = await self._protected_resource_issuer()
        for suffix in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
            status, body = await self._get(self.issuer + suffix)
            document = json_answer(body, MAX_ANSWER_BYTES) if status == 200 else None
            if isinstance(document, dict):
                issuer, authorization, token = (
                    document.get("issuer"),
                    document.get("authorization_endpoint"),
                    document.get("token_endpoint"),
                )
                if not isinstance(issuer, str) or issuer.rstrip("/") != self.issuer:
                    raise Unavailable(f"{self.upstream}: metadata names issuer {issuer!r}, expected {self.issuer!r}")
                if not isinstance(authorization, str) or not isinstance(token, str):
                    raise Unavailable(f"{self.upstream}: metadata without authorization and token endpoints")
                what = f"upstreams.{self.upstream}.auth"
                registration = document.get("registration_endpoint")
                self._endpoints = ServerEndpoints(
                    check_url(authorization, self._allow_http, what),
                    check_url(token, self._allow_http, what),
                    issuer,
                    check_url(registration, self._allow_http, what) if isinstance(registration, str) else None,
                )
                return self._endpoints
        raise Unavailable(f"{self.upstream}: no authorization server metadata at {self.issuer}")

    async def _client(self) -> tuple[str, str | None]:
        """Our client id and secret at the upstream's AS: configured, or registered once (RFC 7591)."""
        if self._client_id is not None:
            return self._client_id, self._client_secret
        async with self._registering:
            endpoints = await self._discover()
            stored = await self._store.secret_for(self.upstream, REGISTRATION_KEY)
            record = json_answer(stored, MAX_ANSWER_BYTES) if stored is not None else None
            if isinstance(record, dict) and record.get("issuer") == endpoints.issuer:
                client_id, secret = record.get("client_id"), record.get("client_secret")
                if isinstance(client_id, str):
                    self._client_id, self._client_secret = client_id, secret if isinstance(secret, str) else None
                    return client_id, self._client_secret
            if endpoints.registration is None:
                raise Unavailable(f"{self.upstream}: no client_id configured and the AS offers no registration")
            body = {
                "client_name": f"mcp-bastion ({self.upstream})",
                "redirect_uris": [self.redirect_uri],
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "client_secret_basic",
            }
            status, answer_body = await self._send("POST", endpoints.registration, json_body=body)
            answer = json_answer(answer_body, MAX_ANSWER_BYTES)
            client_id = answer.get("client_id") if isinstance(answer, dict) else None
            if status not in (200, 201) or not isinstance(answer, dict) or not isinstance(client_id, str):
                raise Unavailable(f"{self.upstream}: dynamic client registration answered HTTP {status}")
            secret = answer.get("client_secret")
            secret = secret if isinstance(secret, str) else None
            record = {"issuer": endpoints.issuer, "client_id": client_id, "client_secret": secret}
            await self._store.put(self.upstream, REGISTRATION_KEY, orjson.dumps(record))
            self._client_id, self._client_secret = client_id, secret
            return client_id, secret

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = session(self._ssl)
        return self._session

    async def _get(self, url: str) -> tuple[int, bytes]:
        failure = None
        try:
            async with self._http().get(url, allow_redirects=False) as response:
                return response.status, await response.content.read(MAX_ANSWER_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            failure = type(exc).__name__
        raise Unavailable(f"{self.upstream}: {url}: {failure}")

    async def _send(self, method: str, url: str, *, json_body: Mapping[str, object]) -> tuple[int, bytes]:
        failure = None
        try:
            data = orjson.dumps(dict(json_body))
            headers = {"Content-Type": "application/json", "Accept": "application/json"}
            async with self._http().request(method, url, data=data, headers=headers, allow_redirects=False) as response:
                return response.status, await response.content.read(MAX_ANSWER_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            failure = type(exc).__name__
        raise Unavailable(f"{self.upstream}: registration endpoint: {failure}")

    async def _post(self, url: str, form: Mapping[str, str], headers: Mapping[str, str]) -> tuple[int, bytes]:
        failure = None
        try:
            async with self._http().post(
                url, data=dict(form), headers=dict(headers), allow_redirects=False
            ) as response:
                return response.status, await response.content.read(MAX_ANSWER_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            failure = type(exc).__name__
        # Raised outside the except: nothing chains to the request, which holds the code or refresh token.
        raise Unavailable(f"{self.upstream}: token endpoint: {failure}")
