"""Federated login: the gateway's login page delegates to an external OpenID Connect provider (a company IdP),
as an OIDC relying party using the authorization code flow with PKCE, and maps the IdP's claims to a ``User``.

OIDC Core 1.0 §3.1.2.1 (authentication request: ``state``, ``nonce``), §3.1.2.5-3.1.2.7 (authorization
response and its validation), §3.1.3 (token endpoint, ID token; see ``oauth.oidc_client``), §5.1 (standard
claims), §5.7 (only ``iss`` + ``sub`` identify a user: ``email`` or ``preferred_username`` may be reassigned),
RFC 7636 (PKCE S256), RFC 9207 §2.4 (``iss`` in the authorization response, against IdP mix-up),
RFC 9700 §4.7 (CSRF: ``state`` bound to the browser).

The flow, as the pages use it::

    url, state = login.start(pending_id)       # state -> a signed, HttpOnly, SameSite=Lax cookie; redirect to url
    user, pending_id = await login.finish(callback_query, FederationState.load(cookie))

Invariants:
- ``state``, ``nonce`` and the PKCE verifier are 256-bit random values, fresh for every login, kept only in
  the browser's ``FederationState`` (signed by the pages) and compared in constant time;
- a ``FederationState`` names its issuer and expires; ``finish`` refuses one made for another IdP or too old;
- ``User.id`` is ``f"{issuer}#{sub}"``: stable at the IdP and never shared with a local or another IdP's user;
- IdP groups become roles only through the configured mapping: an IdP group that happens to be named like
  one of our roles grants nothing by itself;
- ``email`` is used (as a username or for the domain allow-list) only when ``email_verified`` is true;
- every failure raises ``Refusal`` (an ``OAuthError``) with ``reason`` in ``REASONS``; no token, code or
  secret ever appears in an error.
"""

from __future__ import annotations

import base64
import hmac
import logging
import secrets
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

from mcp_bastion.errors import ConfigError, Unavailable
from mcp_bastion.oauth import oidc_client
from mcp_bastion.oauth.access_token import SUPPORTED_ALGORITHMS
from mcp_bastion.oauth.jwks import KeySource, RemoteKeySet
from mcp_bastion.oauth.oidc_client import (
    ID_TOKEN_ALGORITHMS,
    AiohttpTransport,
    HTTPTransport,
    IDTokenCheck,
    ProviderMetadata,
)
from mcp_bastion.oauth.pkce import s256
from mcp_bastion.oauth.refusal import Refusal
from mcp_bastion.oauth.service import User

logger = logging.getLogger(__name__)

REASONS: Final = oidc_client.REASONS | {
    "idp_not_discovered",
    "state_invalid",
    "state_mismatch",
    "state_expired",
    "iss_mismatch",
    "iss_missing",
    "idp_error",
    "code_missing",
    "claims_malformed",
    "username_missing",
    "username_invalid",
    "email_domain_forbidden",
}
"""Every ``Refusal.reason`` a federated login can end with."""

STATE_LIFETIME_SECONDS: Final = 600
"""How long a user may spend at the IdP's login page before the login must start over."""
MAX_USERNAME_LENGTH: Final = 256
DEFAULT_LEEWAY_SECONDS: Final = 60
_RANDOM_BYTES: Final = 32
"""256-bit ``state``, ``nonce`` and PKCE verifier (43 base64url characters: RFC 7636 §4.1's minimum)."""
_STATE_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class OIDCProvider:
    """Settings of one upstream OpenID Provider. Secure by default; ``allow_insecure_http`` is for tests."""

    issuer: str
    """Exactly as the IdP spells it in its discovery document and ID tokens."""
    client_id: str
    redirect_uri: str
    """Our callback URL, registered at the IdP for this client (one per IdP helps against mix-up)."""
    client_secret: str | None = field(default=None, repr=False)
    """``client_secret_basic``; None for a public client (auth method ``none``, protected by PKCE alone)."""
    display_name: str = ""
    """For the "Sign in with …" button; the issuer's host when empty."""
    scopes: tuple[str, ...] = ("openid", "profile", "email")
    username_claims: tuple[str, ...] = ("preferred_username", "email", "sub")
    """Tried in order; the first non-empty string wins (``email`` only when ``email_verified`` is true)."""
    groups_claim: str | None = "groups"
    """The claim listing the user's IdP groups (or roles); None to ignore groups."""
    group_roles: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """IdP group -> our roles. Groups not listed here give no role."""
    default_roles: frozenset[str] = frozenset()
    """Roles every user from this IdP gets."""
    allowed_email_domains: frozenset[str] | None = None
    """When set, only users with a verified email in one of these domains may log in."""
    algorithms: frozenset[str] = ID_TOKEN_ALGORITHMS
    use_userinfo: bool = True
    """Also read the UserInfo endpoint: in the code flow, OIDC Core §5.4 puts scope claims there."""
    leeway_seconds: int = DEFAULT_LEEWAY_SECONDS
    allow_insecure_http: bool = False
    """Plain http to a loopback IP literal (tests with a local IdP). Never in production."""

    def __post_init__(self) -> None:
        def bad(setting: str, why: str) -> ConfigError:
            return ConfigError(f"oidc provider {self.issuer!r}: {setting}: {why}")

        problem = oidc_client.url_problem(self.issuer, allow_insecure_http=self.allow_insecure_http)
        if problem is not None or urlsplit(self.issuer).query:
            raise bad("issuer", problem or "must not have a query")
        problem = oidc_client.url_problem(self.redirect_uri, allow_insecure_http=self.allow_insecure_http)
        if problem is not None:
            raise bad("redirect_uri", problem)
        if not self.client_id:
            raise bad("client_id", "must not be empty")
        if self.client_secret == "":
            raise bad("client_secret", "empty; use None for a public client")
        if "openid" not in self.scopes or any(not s or " " in s for s in self.scopes):
            raise bad("scopes", f"{list(self.scopes)} must include 'openid' and have no spaces or empty values")
        if not self.username_claims or not all(self.username_claims):
            raise bad("username_claims", "must name at least one claim")
        if not self.algorithms or not self.algorithms <= SUPPORTED_ALGORITHMS.keys():
            raise bad("algorithms", f"{sorted(self.algorithms)}; allowed are {sorted(SUPPORTED_ALGORITHMS)}")
        if not 0 <= self.leeway_seconds <= 300:
            raise bad("leeway_seconds", "must be between 0 and 300")
        roles: dict[str, frozenset[str]] = {}
        for group, mapped in self.group_roles.items():
            # A bare string would become a set of its characters: the classic mistake in a config file.
            if not group or isinstance(mapped, str) or not all(isinstance(r, str) and r for r in mapped):
                raise bad("group_roles", f"{group!r} must map to a list of role names")
            roles[group] = frozenset(mapped)
        object.__setattr__(self, "group_roles", MappingProxyType(roles))
        if self.allowed_email_domains is not None:
            if not self.allowed_email_domains or not all(self.allowed_email_domains):
                raise bad("allowed_email_domains", "must be None (no restriction) or name domains")
            object.__setattr__(
                self, "allowed_email_domains", frozenset(d.lower().lstrip("@") for d in self.allowed_email_domains)
            )
        if not self.display_name:
            object.__setattr__(self, "display_name", urlsplit(self.issuer).hostname or self.issuer)


@dataclass(frozen=True, slots=True)
class FederationState:
    """What the browser carries from ``start`` to ``finish``, in a cookie the pages sign (and should encrypt:
    ``code_verifier`` is a secret, though useless without the code and, for a confidential client, our secret).
    """

    issuer: str
    state: str = field(repr=False)
    nonce: str = field(repr=False)
    code_verifier: str = field(repr=False)
    pending_id: str
    """The gateway's pending authorization this login belongs to (``AuthorizationService.pending``)."""
    expires_at: int

    def dump(self) -> str:
        """Compact JSON for the cookie payload."""
        data = [_STATE_VERSION, self.issuer, self.state, self.nonce, self.code_verifier, self.pending_id]
        return orjson.dumps([*data, self.expires_at]).decode()

    @classmethod
    def load(cls, data: str | bytes) -> FederationState:
        """Parse ``dump()`` output; ``Refusal`` (state_invalid) for anything else."""
        try:
            version, issuer, state, nonce, verifier, pending_id, expires_at = orjson.loads(data)
        except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
            raise _invalid_request("state_invalid", "login state cookie is malformed") from exc
        strings = (issuer, state, nonce, verifier, pending_id)
        if version != _STATE_VERSION or not all(isinstance(v, str) and v for v in strings):
            raise _invalid_request("state_invalid", "login state cookie is malformed")
        if isinstance(expires_at, bool) or not isinstance(expires_at, int):
            raise _invalid_request("state_invalid", "login state cookie is malformed")
        return cls(issuer, state, nonce, verifier, pending_id, expires_at)


def _invalid_request(reason: str, description: str) -> Refusal:
    return Refusal("invalid_request", reason, description, status=400)


def _denied(reason: str, description: str) -> Refusal:
    return Refusal("access_denied", reason, description, status=403)


def _random() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(_RANDOM_BYTES)).rstrip(b"=").decode("ascii")


def _same(received: str, expected: str) -> bool:
    return hmac.compare_digest(received.encode(), expected.encode())


def _verified_email(claims: Mapping[str, object]) -> str | None:
    email = claims.get("email")
    # OIDC Core §5.1: only a verified address says the user controls it; some IdPs send "true" as a string.
    verified = claims.get("email_verified") in (True, "true")
    return email if isinstance(email, str) and "@" in email and verified else None


def map_claims(provider: OIDCProvider, claims: Mapping[str, object]) -> User:
    """The ``User`` for verified IdP claims (ID token, then UserInfo for what it lacks)."""
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise _denied("claims_malformed", "no 'sub' claim")
    email = _verified_email(claims)
    if provider.allowed_email_domains is not None:
        domain = email.rpartition("@")[2].lower() if email else None
        if domain not in provider.allowed_email_domains:
            raise _denied("email_domain_forbidden", f"verified email domain {domain!r} is not allowed")
    username: str | None = None
    for name in provider.username_claims:
        value = email if name == "email" else claims.get(name)
        if isinstance(value, str) and value:
            username = value
            break
    if username is None:
        raise _denied("username_missing", f"none of the claims {list(provider.username_claims)} is usable")
    if len(username) > MAX_USERNAME_LENGTH or not username.isprintable():
        # It is logged, shown on pages and written to audit records.
        raise _denied("username_invalid", f"username of {len(username)} characters or with control characters")
    roles = set(provider.default_roles)
    if provider.groups_claim is not None:
        groups = claims.get(provider.groups_claim, [])
        if isinstance(groups, str):
            groups = [groups]
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise _denied("claims_malformed", f"claim {provider.groups_claim!r} is not a list of strings")
        for group in groups:
            roles |= provider.group_roles.get(group, frozenset())
    return User(id=f"{provider.issuer}#{subject}", username=username, roles=frozenset(roles))


@final
class FederatedLogin:
    """Logs users in through one external OpenID Provider. Call ``discover()`` at startup, ``aclose()`` at
    shutdown; ``start`` and ``finish`` serve the login page's button and the callback route."""

    def __init__(
        self,
        provider: OIDCProvider,
        *,
        ssl_context: ssl.SSLContext | None = None,
        http: HTTPTransport | None = None,
        keys: Callable[[str], KeySource] | None = None,
        clock: Callable[[], float] = time.time,
        random: Callable[[], str] = _random,
    ) -> None:
        """``http`` and ``keys`` (jwks_uri -> key source) are seams for tests; by default aiohttp and a
        ``RemoteKeySet``, both trusting ``ssl_context`` (None: the system trust store)."""
        if provider.allow_insecure_http:
            logger.warning("federated login with %s allows plain http (allow_insecure_http)", provider.issuer)
        self.provider: Final = provider
        self._ssl = ssl_context
        self._http = http if http is not None else AiohttpTransport(ssl_context)
        self._keys_for = keys if keys is not None else self._remote_keys
        self._clock = clock
        self._random = random
        self._metadata: ProviderMetadata | None = None
        self._keys: KeySource | None = None

    def _remote_keys(self, jwks_uri: str) -> KeySource:
        return RemoteKeySet(jwks_uri, self._ssl, allow_insecure_http=self.provider.allow_insecure_http)

    @property
    def metadata(self) -> ProviderMetadata | None:
        """The IdP's configuration, once ``discover()`` succeeded."""
        return self._metadata

    async def discover(self) -> ProviderMetadata:
        """Fetch and check the IdP's configuration (Discovery §4) and its JWK Set; ``Refusal`` on failure."""
        provider = self.provider
        url = oidc_client.discovery_url(provider.issuer)
        response = await self._http.request("GET", url, headers={"Accept": "application/json"})
        metadata = oidc_client.parse_metadata(
            response, issuer=provider.issuer, allow_insecure_http=provider.allow_insecure_http
        )
        method = "none" if provider.client_secret is None else "client_secret_basic"
        if method not in metadata.token_endpoint_auth_methods:
            raise Refusal("server_error", "discovery_invalid", f"the IdP does not offer {method}", status=502)
        if not provider.algorithms & metadata.id_token_algorithms:
            raise Refusal("server_error", "discovery_invalid", "no ID token algorithm in common", status=502)
        keys = self._keys if self._metadata is not None and self._metadata.jwks_uri == metadata.jwks_uri else None
        if keys is None:
            try:
                keys = self._keys_for(metadata.jwks_uri)
            except ConfigError as exc:
                raise Refusal("server_error", "discovery_invalid", f"jwks_uri: {exc.detail}", status=502) from exc
            if isinstance(keys, RemoteKeySet):
                try:
                    await keys.refresh()  # fail at startup, not at the first user's login
                except Unavailable as exc:
                    await keys.aclose()
                    raise Refusal("server_error", "discovery_invalid", f"jwks_uri: {exc.detail}", status=502) from exc
            old = self._keys
            if isinstance(old, RemoteKeySet):
                await old.aclose()
        self._metadata, self._keys = metadata, keys
        return metadata

    def start(self, pending_id: str) -> tuple[str, FederationState]:
        """The IdP authorization URL to redirect the browser to, and the state for its cookie."""
        metadata = self._metadata
        if metadata is None:
            raise Refusal("temporarily_unavailable", "idp_not_discovered", "IdP not discovered yet", status=503)
        provider = self.provider
        state = FederationState(
            issuer=provider.issuer,
            state=self._random(),
            nonce=self._random(),
            code_verifier=self._random(),
            pending_id=pending_id,
            expires_at=int(self._clock()) + STATE_LIFETIME_SECONDS,
        )
        params = {
            "response_type": "code",
            "client_id": provider.client_id,
            "redirect_uri": provider.redirect_uri,
            "scope": " ".join(provider.scopes),
            "state": state.state,
            "nonce": state.nonce,
            "code_challenge": s256(state.code_verifier),
            "code_challenge_method": "S256",
        }
        # OIDC Core §3.1.2.1 / RFC 6749 §3.1: the endpoint may carry a query of its own, which is kept.
        parts = urlsplit(metadata.authorization_endpoint)
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
        return urlunsplit(parts._replace(query=urlencode([*query, *params.items()]))), state

    async def finish(self, params: Mapping[str, str], state: FederationState) -> tuple[User, str]:
        """Validate the IdP's redirect to our callback (its query parameters) against the browser's state;
        return the logged-in user and the pending authorization id. ``Refusal`` on every failure."""
        metadata, keys, provider = self._metadata, self._keys, self.provider
        if metadata is None or keys is None:
            raise Refusal("temporarily_unavailable", "idp_not_discovered", "IdP not discovered yet", status=503)
        now = self._clock()
        if state.issuer != provider.issuer:
            raise _invalid_request("state_mismatch", "login state belongs to another IdP")
        if now >= state.expires_at:
            raise _invalid_request("state_expired", "the login took too long; start again")
        # §3.1.2.7 / RFC 9700 §4.7: first of all, is this the response to the request this browser made?
        if not _same(params.get("state", ""), state.state):
            raise _invalid_request("state_mismatch", "state does not match this browser's login")
        # RFC 9207 §2.4: from the IdP we sent the user to, and required when it says it always sends iss.
        iss = params.get("iss")
        if iss is not None and iss != provider.issuer:
            raise _invalid_request("iss_mismatch", f"authorization response from issuer {iss[:100]!r}")
        if iss is None and metadata.iss_parameter_supported:
            raise _invalid_request("iss_missing", "the IdP always sends iss, this response has none")
        if "error" in params:
            # The IdP's code is safe to quote (RFC 6749 §4.1.2.1: a short ASCII token); the rest is left out.
            raise _denied("idp_error", f"the IdP answered error={params['error'][:64]!r}")
        code = params.get("code")
        if not code:
            raise _invalid_request("code_missing", "no code in the authorization response")
        tokens = await oidc_client.exchange_code(
            self._http,
            metadata.token_endpoint,
            client_id=provider.client_id,
            client_secret=provider.client_secret,
            code=code,
            redirect_uri=provider.redirect_uri,
            code_verifier=state.code_verifier,
        )
        check = IDTokenCheck(
            issuer=provider.issuer,
            client_id=provider.client_id,
            nonce=state.nonce,
            algorithms=provider.algorithms,
            leeway_seconds=provider.leeway_seconds,
        )
        claims = await oidc_client.verify_id_token(tokens.id_token, check, keys, now=self._clock())
        if provider.use_userinfo and metadata.userinfo_endpoint is not None and tokens.access_token is not None:
            userinfo = await oidc_client.fetch_userinfo(
                self._http, metadata.userinfo_endpoint, tokens.access_token, str(claims["sub"])
            )
            # The signed ID token wins where both speak; UserInfo fills in what it left out (§5.4).
            claims = {**userinfo, **claims}
        return map_claims(provider, claims), state.pending_id

    async def aclose(self) -> None:
        await self._http.aclose()
        if isinstance(self._keys, RemoteKeySet):
            await self._keys.aclose()
