"""In-memory fakes of the seams the pages use (``AuthorizationService``, ``UserDirectory``, an external IdP's
``FederatedLogin``), a recording login limiter, and helpers to read the pages' HTML."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from mcp_bastion.oauth.federation import STATE_LIFETIME_SECONDS, FederationState, OIDCProvider
from mcp_bastion.oauth.oidc_client import ProviderMetadata
from mcp_bastion.oauth.refusal import Refusal
from mcp_bastion.oauth.service import ClientView, Consent, OAuthError, PendingAuthorization, User

ISSUER = "https://bastion.test"
RESOURCE = "https://bastion.test/mcp/files"

SCOPE_WORDS = {
    "files:read": "Read your files",
    "files:write": "Create, change and delete your files",
    "admin": "Administer the gateway",
}
ADMIN_ONLY = frozenset({"admin"})


def add_query(url: str, params: Mapping[str, str | None]) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query) + [(k, v) for k, v in params.items() if v is not None]
    return urlunsplit(parts._replace(query=urlencode(query)))


@dataclass
class FakeClient:
    client_id: str
    name: str
    redirect_uris: tuple[str, ...]
    kind: str = "registered"


@dataclass
class Approval:
    pending_id: str
    user: User
    scopes: frozenset[str]


@dataclass
class FakeService:
    """Validates /authorize like the real server would, in miniature, and records what the pages asked."""

    clock: Callable[[], float]
    clients: dict[str, FakeClient] = field(default_factory=dict)
    consents: dict[tuple[str, str], Consent] = field(default_factory=dict)
    approvals: list[Approval] = field(default_factory=list)
    denials: list[str] = field(default_factory=list)
    lifetime: float = 300.0
    descriptions: dict[str, str] = field(default_factory=lambda: dict(SCOPE_WORDS))
    _pending: dict[str, tuple[PendingAuthorization, str, str | None]] = field(default_factory=dict)

    def add_client(self, client: FakeClient) -> FakeClient:
        self.clients[client.client_id] = client
        return client

    async def begin(self, query: Mapping[str, str]) -> PendingAuthorization:
        client = self.clients.get(query.get("client_id", ""))
        if client is None:
            raise OAuthError("invalid_request", "Unknown client.")
        redirect_uri = query.get("redirect_uri", "")
        if redirect_uri not in client.redirect_uris:
            raise OAuthError("invalid_request", "The redirect URI is not registered for this client.")
        state = query.get("state")
        if query.get("response_type") != "code":
            raise OAuthError("unsupported_response_type", redirect_uri=redirect_uri, state=state)
        if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            raise OAuthError("invalid_request", "PKCE with S256 is required.", redirect_uri=redirect_uri, state=state)
        scopes = tuple(scope for scope in query.get("scope", "").split() if scope in self.descriptions)
        pending = PendingAuthorization(
            id=secrets.token_urlsafe(16),
            client=ClientView(
                client_id=client.client_id,
                name=client.name,
                redirect_host=urlsplit(redirect_uri).netloc,
                kind=client.kind,
            ),
            scopes=scopes,
            scope_descriptions={scope: self.descriptions[scope] for scope in scopes},
            resource=query.get("resource", RESOURCE),
            expires_at=self.clock() + self.lifetime,
        )
        self._pending[pending.id] = (pending, redirect_uri, state)
        return pending

    def _lookup(self, pending_id: str) -> tuple[PendingAuthorization, str, str | None]:
        entry = self._pending.get(pending_id)
        if entry is None or entry[0].expires_at <= self.clock():
            raise OAuthError("invalid_request", "This authorization request is unknown or has expired.")
        return entry

    async def pending(self, pending_id: str) -> PendingAuthorization:
        return self._lookup(pending_id)[0]

    async def approve(self, pending_id: str, user: User, scopes: frozenset[str]) -> str:
        _, redirect_uri, state = self._lookup(pending_id)
        del self._pending[pending_id]
        self.approvals.append(Approval(pending_id, user, scopes))
        return add_query(redirect_uri, {"code": f"code-{len(self.approvals)}", "state": state, "iss": ISSUER})

    async def deny(self, pending_id: str) -> str:
        _, redirect_uri, state = self._lookup(pending_id)
        del self._pending[pending_id]
        self.denials.append(pending_id)
        return add_query(redirect_uri, {"error": "access_denied", "state": state, "iss": ISSUER})

    async def allowed_scopes(self, user: User, pending: PendingAuthorization) -> frozenset[str]:
        return frozenset(s for s in pending.scopes if s not in ADMIN_ONLY or "admin" in user.roles)

    async def consent(self, user: User, client_id: str) -> Consent | None:
        consent = self.consents.get((user.id, client_id))
        return consent if consent is not None and not consent.revoked else None

    def remember(self, user: User, client_id: str, scopes: frozenset[str]) -> None:
        self.consents[(user.id, client_id)] = Consent(user.id, client_id, scopes, granted_at=self.clock())


@dataclass
class FakeDirectory:
    users: dict[str, tuple[User, str]] = field(default_factory=dict)
    attempts: list[str] = field(default_factory=list)

    def add(self, user: User, password: str) -> User:
        self.users[user.username] = (user, password)
        return user

    async def authenticate(self, username: str, password: str) -> User:
        self.attempts.append(username)
        user, expected = self.users.get(username, (None, ""))
        if user is None or user.disabled or not hmac.compare_digest(password.encode(), expected.encode()):
            raise OAuthError("access_denied")
        return user

    async def get(self, user_id: str) -> User | None:
        return next((user for user, _ in self.users.values() if user.id == user_id), None)


@dataclass
class RecordingLimiter:
    """A limiter that refuses while ``wait`` is positive and records what it was told."""

    wait: float = 0.0
    calls: list[tuple[str, str, str]] = field(default_factory=list)

    async def check(self, username: str, address: str) -> float:
        self.calls.append(("check", username, address))
        return self.wait

    async def failed(self, username: str, address: str) -> None:
        self.calls.append(("failed", username, address))

    async def succeeded(self, username: str, address: str) -> None:
        self.calls.append(("succeeded", username, address))


class _FormReader(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[dict[str, str]] = []
        self.reason: str | None = None
        self._in_reason = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag in ("input", "button"):
            self.inputs.append({"tag": tag, **attributes})
        self._in_reason = tag == "code" and attributes.get("class") == "reason"

    def handle_data(self, data: str) -> None:
        if self._in_reason:
            self.reason = data
            self._in_reason = False


def inputs(html: str) -> list[dict[str, str]]:
    """The ``input`` and ``button`` elements of a page, each as its attributes (plus ``tag``)."""
    reader = _FormReader()
    reader.feed(html)
    return reader.inputs


def hidden(html: str) -> dict[str, str]:
    return {i["name"]: i.get("value", "") for i in inputs(html) if i.get("type") == "hidden"}


def checkboxes(html: str) -> list[str]:
    return [i["value"] for i in inputs(html) if i.get("type") == "checkbox"]


def reason(html: str) -> str | None:
    """The stable reason code an error page shows (``<code class="reason">``)."""
    reader = _FormReader()
    reader.feed(html)
    return reader.reason


IDP_ISSUER = "https://idp.example"
IDP_AUTHORIZE = "https://login.idp.example/authorize"


def idp_metadata(authorization_endpoint: str = IDP_AUTHORIZE, issuer: str = IDP_ISSUER) -> ProviderMetadata:
    return ProviderMetadata(
        issuer=issuer,
        authorization_endpoint=authorization_endpoint,
        token_endpoint=f"{issuer}/token",
        jwks_uri=f"{issuer}/jwks",
        userinfo_endpoint=None,
        iss_parameter_supported=True,
        token_endpoint_auth_methods=frozenset({"client_secret_basic"}),
        id_token_algorithms=frozenset({"ES256"}),
    )


@dataclass
class FakeFederatedLogin:
    """Stands in for ``oauth.federation.FederatedLogin``: ``start`` makes a numbered state and a URL at
    ``metadata.authorization_endpoint``; ``finish`` compares ``state`` like the real one, then raises
    ``refusal`` if set, else returns ``user``. Records what the pages asked."""

    provider: OIDCProvider
    metadata: ProviderMetadata | None
    user: User
    clock: Callable[[], float]
    refusal: Refusal | None = None
    started: list[FederationState] = field(default_factory=list)
    finished: list[dict[str, str]] = field(default_factory=list)

    def start(self, pending_id: str) -> tuple[str, FederationState]:
        if self.metadata is None:
            raise Refusal("temporarily_unavailable", "idp_not_discovered", "IdP not discovered yet", status=503)
        number = len(self.started) + 1
        state = FederationState(
            issuer=self.provider.issuer,
            state=f"state-{number}",
            nonce=f"nonce-{number}",
            code_verifier=f"verifier-{number}-" + "v" * 40,
            pending_id=pending_id,
            expires_at=int(self.clock()) + STATE_LIFETIME_SECONDS,
        )
        self.started.append(state)
        return add_query(self.metadata.authorization_endpoint, {"state": state.state}), state

    async def finish(self, params: Mapping[str, str], state: FederationState) -> tuple[User, str]:
        self.finished.append(dict(params))
        if params.get("state") != state.state:
            raise Refusal("invalid_request", "state_mismatch", "state does not match this browser's login")
        if self.refusal is not None:
            raise self.refusal
        return self.user, state.pending_id


def fake_idp(
    clock: Callable[[], float],
    *,
    display_name: str = "Corp SSO",
    discovered: bool = True,
    authorization_endpoint: str = IDP_AUTHORIZE,
    roles: frozenset[str] = frozenset({"analyst"}),
) -> FakeFederatedLogin:
    provider = OIDCProvider(
        issuer=IDP_ISSUER,
        client_id="bastion",
        redirect_uri="https://bastion.test/authorize/federated/corp/callback",
        display_name=display_name,
    )
    user = User(id=f"{IDP_ISSUER}#248289761001", username="alice@corp", roles=roles)
    metadata = idp_metadata(authorization_endpoint) if discovered else None
    return FakeFederatedLogin(provider, metadata, user, clock)
