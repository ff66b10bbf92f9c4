"""The built-in OAuth 2.1 authorization server: the front channel the pages use, and the back-channel
operations the JSON endpoints call.

RFC 6749 §4.1.1-4.1.2 (authorization request and response; errors go to a redirect URI only once it is
verified, §4.1.2.1), OAuth 2.1 §4.1 (PKCE S256 required, exact redirect URIs), RFC 8707 §2 (``resource``
required and one of ours: ``invalid_target``), RFC 9207 §2 (``iss`` in every authorization response),
RFC 7591 (registration, via ``oauth.registration``), RFC 7009 (revocation), RFC 7662 (introspection),
RFC 8414 (metadata, via ``oauth.asmetadata``). The grants themselves live in ``oauth.grants``.

Invariants:
- an unknown client or an unverified redirect URI is never redirected to: the refusal has no
  ``redirect_uri`` and the pages show it to the user;
- a pending authorization is used once: ``approve`` and ``deny`` take it from the store atomically;
- granted scopes are the intersection of what the resource offers, what the client registered for, what
  the client asked for, what the policy lets this user grant, and what the user ticked;
- revocation and introspection answer only about the calling client's own tokens, and tell nothing about
  tokens that are unknown, foreign, expired or malformed (RFC 7009 §2.2: still 200; RFC 7662: inactive);
- the resource side's revocation check reads the store on every call; a store failure propagates, so the
  verifier fails closed.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Final, Protocol, final
from urllib.parse import urlencode, urlsplit

import orjson

from mcp_bastion.errors import ConfigError
from mcp_bastion.jsonrpc.message import JSONValue
from mcp_bastion.oauth import asmetadata, pkce, redirects, registration, scopes
from mcp_bastion.oauth.access_token import AccessClaims
from mcp_bastion.oauth.clientauth import ASSERTION_ALGORITHMS, ClientKeys, RegisteredClientKeys, authenticate_client
from mcp_bastion.oauth.grants import Lifetimes, TokenEndpoint, digest, new_token
from mcp_bastion.oauth.jwks import KeySource
from mcp_bastion.oauth.refusal import Refusal
from mcp_bastion.oauth.registration import RegistrationPolicy
from mcp_bastion.oauth.revocation import TokenStatus
from mcp_bastion.oauth.sealing import Sealer
from mcp_bastion.oauth.service import ClientView, Consent, PendingAuthorization, ScopePolicy, User, allow_all
from mcp_bastion.oauth.signer import SignerKeys, TokenSigner
from mcp_bastion.oauth.store import (
    ClientRecord,
    CodeRecord,
    ConsentRecord,
    FamilyRecord,
    OAuthStore,
    PendingRecord,
)
from mcp_bastion.oauth.tokenexchange import TokenExchanger

logger = logging.getLogger(__name__)

MAX_STATE_LENGTH: Final = 2048
METADATA_DOCUMENT_TTL: Final = 3600.0
"""How long a fetched client ID metadata document is trusted before it is fetched again."""


class MetadataDocuments(Protocol):
    """Fetches client ID metadata documents (https only, SSRF-guarded, size and time limited)."""

    async def fetch(self, url: str) -> Mapping[str, object]:
        """The parsed JSON document at ``url``; ``Refusal`` when it cannot be fetched or is not a JSON object
        (anything else is a bug and propagates)."""
        ...


def _token_param(form: Mapping[str, str]) -> str:
    token = form.get("token")
    if not token:
        raise Refusal("invalid_request", "token_missing", "token is required")
    return token


def response_url(redirect_uri: str, params: Mapping[str, str | None]) -> str:
    """``redirect_uri`` with ``params`` added to its query (RFC 6749 §4.1.2: keep its own query)."""
    query = urlencode({name: value for name, value in params.items() if value is not None})
    return redirect_uri + ("&" if urlsplit(redirect_uri).query else "?") + query


@final
class AuthorizationServer:
    """The authorization server core. Implements ``service.AuthorizationService``."""

    def __init__(
        self,
        *,
        issuer: str,
        signer: TokenSigner,
        store: OAuthStore,
        sealer: Sealer,
        resources: Mapping[str, Iterable[str]],
        scope_policy: ScopePolicy = allow_all,
        registration_policy: RegistrationPolicy = "open",
        initial_access_tokens: Iterable[str] = (),
        lifetimes: Lifetimes | None = None,
        client_keys: ClientKeys | None = None,
        metadata_documents: MetadataDocuments | None = None,
        keys: KeySource | None = None,
        exchange_audiences: Mapping[str, Iterable[str]] | None = None,
        clock: Callable[[], float] = time.time,
        random: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        """``resources`` maps each MCP endpoint URL (an RFC 8707 resource) to the scopes it offers; a mapping
        of scope → description also works, and the descriptions then appear on the consent page. ``keys`` is
        where revocation and introspection look up our own keys (default: the signer's published set; the
        key ring's ``key_source`` also follows rotations made by other processes)."""
        if signer.issuer != issuer:
            raise ConfigError(f"signer issuer {signer.issuer!r} differs from the server's issuer {issuer!r}")
        if not resources:
            raise ConfigError("the authorization server needs at least one resource")
        self.endpoints: Final = asmetadata.Endpoints.for_issuer(issuer)
        self.issuer: Final = issuer
        offered: dict[str, frozenset[str]] = {}
        descriptions: dict[str, str] = {}
        for resource, resource_scopes in resources.items():
            asmetadata.Endpoints.for_issuer(resource)  # the same URL rules: https, or http on loopback
            for scope in resource_scopes:
                if not scopes.SCOPE_TOKEN.fullmatch(scope):
                    raise ConfigError(f"resource {resource!r}: {scope!r} is not a scope token")
                if isinstance(resource_scopes, Mapping) and resource_scopes[scope]:
                    descriptions[scope] = str(resource_scopes[scope])
            offered[resource] = frozenset(resource_scopes)
        self._resources: Final = MappingProxyType(offered)
        self._descriptions: Final = MappingProxyType(descriptions)
        self._all_scopes: Final = frozenset().union(*offered.values())
        self._signer = signer
        self._store = store
        self._policy = scope_policy
        self._registration = registration_policy
        self._initial_tokens = frozenset(registration.secret_hash(token) for token in initial_access_tokens)
        if registration_policy == "token" and not self._initial_tokens:
            raise ConfigError("registration policy 'token' needs at least one initial access token")
        self._lifetimes = lifetimes if lifetimes is not None else Lifetimes()
        self._keys = client_keys if client_keys is not None else RegisteredClientKeys()
        self._documents = metadata_documents
        self._clock = clock
        self._random = random
        self._status = TokenStatus(
            issuer=issuer,
            keys=keys if keys is not None else SignerKeys(signer),
            store=store,
            resources=tuple(offered),
            clock=clock,
        )
        exchanger = None
        audiences = {target: frozenset(names) for target, names in (exchange_audiences or {}).items()}
        if audiences:
            mixed = set(audiences) & set(offered)
            if mixed:
                raise ConfigError(f"token exchange audiences must not be our own MCP endpoints: {sorted(mixed)}")
            exchanger = TokenExchanger(
                audiences=audiences,
                signer=signer,
                verify_subject=self._status.live_access_claims,
                scope_policy=scope_policy,
                lifetime=self._lifetimes.access_token,
            )
        self._exchange_audiences: Final = frozenset(audiences)
        self._grants = TokenEndpoint(
            store=store,
            signer=signer,
            scope_policy=scope_policy,
            exchanger=exchanger,
            sealer=sealer,
            resources=self._resources,
            lifetimes=self._lifetimes,
            random=random,
        )

    @property
    def resources(self) -> Mapping[str, frozenset[str]]:
        return self._resources

    # -- clients --------------------------------------------------------------------------------------

    async def client(self, client_id: str) -> ClientRecord | None:
        """A known client: registered, static, or a (cached) client ID metadata document."""
        record = await self._store.get_client(client_id)
        now = self._clock()
        if record is not None and (record.expires_at is None or now < record.expires_at):
            return record
        if self._documents is None or not client_id.startswith("https://"):
            return None
        try:
            document = await self._documents.fetch(client_id)
            record = registration.metadata_document_client(
                client_id, document, known_scopes=self._all_scopes, now=now, ttl=METADATA_DOCUMENT_TTL
            )
        except Refusal as exc:
            # Unreachable or unacceptable document: to every caller, the client is simply unknown.
            logger.info("client metadata document %s refused: %s", client_id, exc.reason)
            return None
        await self._store.put_client(record)
        return record

    async def _authenticate(self, form: Mapping[str, str], authorization: str | None) -> ClientRecord:
        return await authenticate_client(
            form,
            authorization,
            lookup=self.client,
            store=self._store,
            keys=self._keys,
            audiences=frozenset({self.endpoints.token, self.issuer}),
            now=self._clock(),
        )

    def _view(self, client: ClientRecord, redirect_uri: str) -> ClientView:
        return ClientView(client.client_id, client.name, redirects.redirect_host(redirect_uri), client.kind)

    # -- front channel (service.AuthorizationService) -------------------------------------------------

    async def begin(self, query: Mapping[str, str]) -> PendingAuthorization:
        client_id = query.get("client_id")
        if not client_id:
            raise Refusal("invalid_request", "client_id_missing", "client_id is required")
        client = await self.client(client_id)
        if client is None:
            raise Refusal("invalid_request", "client_unknown", "unknown client")
        requested_uri = query.get("redirect_uri")
        if not requested_uri:
            # We require it even when one URI is registered: the token request must then repeat it exactly.
            raise Refusal("invalid_request", "redirect_uri_missing", "redirect_uri is required")
        redirect_uri = redirects.match(requested_uri, client.redirect_uris)
        state = query.get("state")
        if state is not None and len(state) > MAX_STATE_LENGTH:
            raise Refusal("invalid_request", "state_too_long", "state is too long")
        try:
            return await self._begin(query, client, redirect_uri, state)
        except Refusal as exc:
            # The redirect URI is verified now: RFC 6749 §4.1.2.1 sends the error back to the client.
            exc.redirect_uri, exc.state = redirect_uri, state
            raise

    async def _begin(
        self, query: Mapping[str, str], client: ClientRecord, redirect_uri: str, state: str | None
    ) -> PendingAuthorization:
        if query.get("response_type") != "code":
            raise Refusal("unsupported_response_type", "response_type_unsupported", "response_type must be code")
        if "authorization_code" not in client.grant_types:
            raise Refusal("unauthorized_client", "grant_type_not_registered", "this client may not use codes")
        challenge = pkce.check_challenge(query.get("code_challenge"), query.get("code_challenge_method"))
        resource = query.get("resource")
        if not resource:
            raise Refusal("invalid_target", "resource_missing", "resource is required")
        offered = self._resources.get(resource)
        if offered is None:
            raise Refusal("invalid_target", "resource_unknown", "resource is not served here")
        allowed = offered if client.scopes is None else offered & client.scopes
        requested = scopes.parse(query.get("scope"))
        if not requested <= allowed:
            raise Refusal("invalid_scope", "scope_not_allowed", "scope is not allowed for this client")
        now = self._clock()
        record = PendingRecord(
            id=new_token(self._random),
            client_id=client.client_id,
            redirect_uri=redirect_uri,
            state=state,
            code_challenge=challenge,
            resource=resource,
            scopes=requested or allowed,
            created_at=now,
            expires_at=now + self._lifetimes.pending,
        )
        await self._store.put_pending(record)
        return self._pending_view(record, client)

    def _pending_view(self, record: PendingRecord, client: ClientRecord) -> PendingAuthorization:
        ordered = tuple(sorted(record.scopes))
        return PendingAuthorization(
            id=record.id,
            client=self._view(client, record.redirect_uri),
            scopes=ordered,
            scope_descriptions=MappingProxyType({s: self._descriptions.get(s, s) for s in ordered}),
            resource=record.resource,
            expires_at=record.expires_at,
        )

    async def _live_pending(self, record: PendingRecord | None) -> tuple[PendingRecord, ClientRecord]:
        if record is None or self._clock() >= record.expires_at:
            raise Refusal("invalid_request", "pending_unknown", "this sign-in request has expired")
        client = await self.client(record.client_id)
        if client is None:
            raise Refusal("invalid_request", "client_unknown", "unknown client")
        return record, client

    async def pending(self, pending_id: str) -> PendingAuthorization:
        record, client = await self._live_pending(await self._store.get_pending(pending_id))
        return self._pending_view(record, client)

    async def allowed_scopes(self, user: User, pending: PendingAuthorization) -> frozenset[str]:
        if user.disabled:
            return frozenset()
        requested = frozenset(pending.scopes)
        return self._policy(user, pending.resource, requested, pending.client.client_id) & requested

    async def approve(self, pending_id: str, user: User, scopes: frozenset[str]) -> str:
        record, client = await self._live_pending(await self._store.take_pending(pending_id))
        view = self._pending_view(record, client)
        granted = frozenset(scopes) & record.scopes & await self.allowed_scopes(user, view)
        if user.disabled or (record.scopes and not granted):
            return self._deny_url(record, "no requested scope may be granted")
        now = self._clock()
        family = FamilyRecord(
            id=new_token(self._random),
            client_id=record.client_id,
            subject=user.id,
            resource=record.resource,
            scopes=granted,
            created_at=now,
            expires_at=now + self._lifetimes.family,
            username=user.username,
            roles=user.roles,
        )
        code = new_token(self._random)
        # The family exists before its code: a replay racing the first redemption always finds it to revoke.
        await self._store.put_family(family)
        await self._store.put_code(
            CodeRecord(
                code_hash=digest(code),
                client_id=record.client_id,
                user_id=user.id,
                redirect_uri=record.redirect_uri,
                code_challenge=record.code_challenge,
                resource=record.resource,
                scopes=granted,
                family_id=family.id,
                created_at=now,
                expires_at=now + self._lifetimes.code,
            )
        )
        await self._store.put_consent(ConsentRecord(user.id, record.client_id, record.resource, granted, now))
        return response_url(record.redirect_uri, {"code": code, "state": record.state, "iss": self.issuer})

    async def deny(self, pending_id: str) -> str:
        record, _ = await self._live_pending(await self._store.take_pending(pending_id))
        return self._deny_url(record, "the user declined")

    def _deny_url(self, record: PendingRecord, description: str) -> str:
        params = {"error": "access_denied", "error_description": description, "state": record.state}
        return response_url(record.redirect_uri, {**params, "iss": self.issuer})

    async def consent(self, user: User, client_id: str) -> Consent | None:
        for record in await self._store.get_consents(user.id, client_id):
            if record.revoked_at is None:
                return Consent(user.id, client_id, record.scopes, record.granted_at, resource=record.resource)
        return None

    async def revoke_consent(self, user_id: str, client_id: str) -> int:
        """Withdraw the user's consents for the client and revoke the grants made under them."""
        now = self._clock()
        await self._store.revoke_families(client_id, user_id, now, "consent_revoked")
        return await self._store.revoke_consents(user_id, client_id, now)

    # -- back channel ---------------------------------------------------------------------------------

    async def token(self, form: Mapping[str, str], authorization: str | None) -> dict[str, JSONValue]:
        """The token endpoint (RFC 6749 §3.2). Raises ``Refusal``."""
        client = await self._authenticate(form, authorization)
        return await self._grants.grant(form, client, self._clock())

    async def register(self, body: Mapping[str, object], authorization: str | None) -> dict[str, JSONValue]:
        """The registration endpoint (RFC 7591 §3). Raises ``Refusal``."""
        registration.check_policy(self._registration, authorization, self._initial_tokens)
        registered = registration.register(body, known_scopes=self._all_scopes, now=self._clock(), random=self._random)
        await self._store.put_client(registered.record)
        return registered.response()

    async def revoke(self, form: Mapping[str, str], authorization: str | None) -> None:
        """RFC 7009 §2: revoke a refresh token (its whole family) or an access token (its ``jti``)."""
        client = await self._authenticate(form, authorization)
        await self._status.revoke(_token_param(form), client)

    async def introspect(self, form: Mapping[str, str], authorization: str | None) -> dict[str, JSONValue]:
        """RFC 7662 §2: confidential clients only, and only about their own tokens."""
        client = await self._authenticate(form, authorization)
        if client.auth_method == "none":
            raise Refusal("invalid_client", "introspection_public_client", "authentication required", status=401)
        return await self._status.introspect(_token_param(form), client)

    async def is_revoked(self, claims: AccessClaims) -> bool:
        """``access_token.RevocationCheck`` for the resource side (a store error propagates: 503)."""
        return await self._status.is_revoked(claims)

    # -- documents ------------------------------------------------------------------------------------

    def jwks(self) -> dict[str, JSONValue]:
        """The public signing keys (``jwks_uri``)."""
        document: dict[str, JSONValue] = orjson.loads(orjson.dumps(self._signer.public_keys().as_jwks()))
        return document

    def metadata(self) -> dict[str, JSONValue]:
        """The RFC 8414 metadata document."""
        grants = {"authorization_code", "refresh_token", "client_credentials"}
        if self._exchange_audiences:
            grants.add(registration.TOKEN_EXCHANGE)
        return asmetadata.authorization_server_metadata(
            self.endpoints,
            scopes_supported=self._all_scopes,
            grant_types=grants,
            auth_methods=registration.AUTH_METHODS,
            assertion_algorithms=ASSERTION_ALGORITHMS,
            registration=self._registration != "off",
            client_id_metadata_documents=self._documents is not None,
        )

    async def aclose(self) -> None:
        if isinstance(self._keys, RegisteredClientKeys):
            await self._keys.aclose()
