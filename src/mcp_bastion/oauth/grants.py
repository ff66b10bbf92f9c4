"""The token endpoint's grants: authorization code, refresh token, client credentials.

RFC 6749 §4.1.3 (code redemption: bound to client and redirect URI), §4.1.2 (a replayed code revokes what
it issued), §4.4 (client credentials), §5.1 (the response), §6 (refresh: never a wider scope); RFC 7636
§4.6 (PKCE); RFC 8707 §2.2 (``resource`` at the token endpoint: the audience, never a new one); RFC 9068
(JWT access tokens, minted by the ``TokenSigner``); RFC 9700 §4.14.2 (refresh tokens rotate on every use;
reuse of a rotated one revokes the grant) and §2.2.2 (refresh tokens bound to the client).

Invariants:
- codes, refresh tokens and their families are looked up by SHA-256 digest; the plain values exist only
  in the response to the client;
- a code is consumed before anything else is checked, so it can never be redeemed twice, even by a
  request that then fails (a code presented by the wrong client is burnt, not left for a second try);
- every access token of a code/refresh grant carries its family in ``sid``, so revoking the family
  revokes them on the resource side too, and never outlives the family;
- a duplicate refresh within the grace window gets the same pair as the first (sealed, AAD = family id
  and token digest); after the window, reuse revokes the family.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, final

import orjson

from mcp_bastion.errors import ConfigError
from mcp_bastion.jsonrpc.message import JSONValue
from mcp_bastion.oauth import pkce, scopes
from mcp_bastion.oauth.refusal import Refusal
from mcp_bastion.oauth.registration import TOKEN_EXCHANGE
from mcp_bastion.oauth.sealing import Sealer, Unsealable
from mcp_bastion.oauth.service import ScopePolicy, User, allow_all
from mcp_bastion.oauth.signer import TokenSigner
from mcp_bastion.oauth.store import ClientRecord, FamilyRecord, OAuthStore, RefreshRecord
from mcp_bastion.oauth.tokenexchange import TokenExchanger

MAX_ACCESS_TOKEN_LIFETIME: Final = 3600
"""Access tokens are bearer credentials checked against revocation on every call; an hour is the cap."""
MAX_CODE_LIFETIME: Final = 60
"""RFC 6749 §4.1.2 recommends at most 10 minutes; the issue asks for at most 60 seconds."""
MAX_GRACE_SECONDS: Final = 60.0
MAX_FAMILY_LIFETIME: Final = 365 * 86400
TOKEN_BYTES: Final = 32
"""256-bit codes, refresh tokens and handles."""


@dataclass(frozen=True, slots=True)
class Lifetimes:
    """How long things live, in seconds. Each has a cap; a value over it is a ``ConfigError``."""

    access_token: int = 300
    code: int = 60
    pending: int = 600
    """How long the user has to log in and consent."""
    refresh_grace: float = 5.0
    """A duplicate refresh this soon after the first gets the same pair instead of revoking the family."""
    family: int = 30 * 86400
    """Absolute lifetime of a grant, however often its refresh token rotates."""

    def __post_init__(self) -> None:
        for name, value, cap in (
            ("access_token", self.access_token, MAX_ACCESS_TOKEN_LIFETIME),
            ("code", self.code, MAX_CODE_LIFETIME),
            ("pending", self.pending, 3600),
            ("family", self.family, MAX_FAMILY_LIFETIME),
        ):
            if not 0 < value <= cap:
                raise ConfigError(f"lifetimes.{name} = {value}: must be between 1 and {cap} seconds")
        if not 0 <= self.refresh_grace <= MAX_GRACE_SECONDS:
            raise ConfigError(f"lifetimes.refresh_grace = {self.refresh_grace}: must be 0..{MAX_GRACE_SECONDS}")


def digest(token: str) -> bytes:
    """How codes and refresh tokens are stored: SHA-256 (they are 256-bit random, no slow hash needed)."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def new_token(random: Callable[[int], bytes] = secrets.token_bytes) -> str:
    return base64.urlsafe_b64encode(random(TOKEN_BYTES)).rstrip(b"=").decode("ascii")


def _invalid_grant(reason: str, description: str = "the grant is invalid, expired or revoked") -> Refusal:
    return Refusal("invalid_grant", reason, description)


def _requested_resource(form: Mapping[str, str], bound: str) -> None:
    """RFC 8707 §2.2: a token request may name the resource again, but only the one the grant is for."""
    resource = form.get("resource")
    if resource is not None and resource != bound:
        raise _invalid_grant("resource_mismatch", "the grant is not for this resource")


@final
class TokenEndpoint:
    """The grants, given an already authenticated client."""

    def __init__(
        self,
        *,
        store: OAuthStore,
        signer: TokenSigner,
        sealer: Sealer,
        scope_policy: ScopePolicy = allow_all,
        exchanger: TokenExchanger | None = None,
        resources: Mapping[str, frozenset[str]],
        lifetimes: Lifetimes,
        random: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self._store = store
        self._signer = signer
        self._policy = scope_policy
        self._exchanger = exchanger
        self._sealer = sealer
        self._resources = resources
        self._lifetimes = lifetimes
        self._random = random

    async def grant(self, form: Mapping[str, str], client: ClientRecord, now: float) -> dict[str, JSONValue]:
        """Run the grant the form names; the RFC 6749 §5.1 response. Raises ``Refusal``."""
        grant_type = form.get("grant_type")
        if not grant_type:
            raise Refusal("invalid_request", "grant_type_missing", "grant_type is required")
        handlers = {
            "authorization_code": self._authorization_code,
            "refresh_token": self._refresh_token,
            "client_credentials": self._client_credentials,
        }
        if self._exchanger is not None:
            handlers[TOKEN_EXCHANGE] = self._exchanger.exchange
        handler = handlers.get(grant_type)
        if handler is None:
            raise Refusal("unsupported_grant_type", "grant_type_unsupported", "grant_type is not supported")
        if grant_type not in client.grant_types:
            raise Refusal("unauthorized_client", "grant_type_not_registered", "this client may not use this grant")
        return await handler(form, client, now)

    # -- authorization_code ---------------------------------------------------------------------------

    async def _authorization_code(
        self, form: Mapping[str, str], client: ClientRecord, now: float
    ) -> dict[str, JSONValue]:
        code = form.get("code")
        if not code:
            raise Refusal("invalid_request", "code_missing", "code is required")
        record = await self._store.consume_code(digest(code), now)
        if record is None:
            raise _invalid_grant("code_unknown")
        if record.used_at is not None:
            # RFC 6749 §4.1.2: the code leaked; whatever it already issued is revoked.
            await self._store.revoke_family(record.family_id, now, "code_replay")
            raise _invalid_grant("code_replayed")
        if now >= record.expires_at:
            raise _invalid_grant("code_expired")
        if record.client_id != client.client_id:
            raise _invalid_grant("code_client_mismatch")
        if form.get("redirect_uri") != record.redirect_uri:
            # We always require redirect_uri at /authorize, so OAuth 2.1 §4.1.3 requires it here, identical.
            raise _invalid_grant("code_redirect_uri_mismatch")
        _requested_resource(form, record.resource)
        pkce.verify(form.get("code_verifier"), record.code_challenge)
        family = await self._store.get_family(record.family_id)
        if family is None or family.revoked_at is not None or now >= family.expires_at:
            raise _invalid_grant("family_revoked")
        refresh = new_token(self._random) if "refresh_token" in client.grant_types else None
        response = self._response(family, family.scopes, now, refresh)
        if refresh is not None:
            await self._store.put_refresh(RefreshRecord(digest(refresh), family.id, created_at=now))
        return response

    # -- refresh_token --------------------------------------------------------------------------------

    async def _refresh_token(self, form: Mapping[str, str], client: ClientRecord, now: float) -> dict[str, JSONValue]:
        presented = form.get("refresh_token")
        if not presented:
            raise Refusal("invalid_request", "refresh_token_missing", "refresh_token is required")
        token_hash = digest(presented)
        record = await self._store.get_refresh(token_hash)
        if record is None:
            raise _invalid_grant("refresh_unknown")
        family = await self._store.get_family(record.family_id)
        if family is None or family.revoked_at is not None:
            raise _invalid_grant("family_revoked")
        if now >= family.expires_at:
            raise _invalid_grant("family_expired")
        if family.client_id != client.client_id:
            # RFC 9700 §4.14.2: bound to the client. Another client holding it means it leaked.
            await self._store.revoke_family(family.id, now, "refresh_wrong_client")
            raise _invalid_grant("refresh_client_mismatch")
        _requested_resource(form, family.resource)
        requested = scopes.parse(form.get("scope"))
        if not requested <= family.scopes:
            raise Refusal("invalid_scope", "scope_escalation", "scope exceeds what was granted")
        granted = requested or family.scopes

        successor = new_token(self._random)
        response = self._response(family, granted, now, successor)
        aad = family.id.encode("utf-8") + b"\x00" + token_hash
        sealed = self._sealer.seal(orjson.dumps(response), aad)
        outcome = await self._store.rotate_refresh(
            token_hash,
            RefreshRecord(digest(successor), family.id, created_at=now),
            sealed,
            now,
            self._lifetimes.refresh_grace,
        )
        if outcome is None:
            raise _invalid_grant("refresh_unknown")
        if outcome.kind == "rotated":
            return response
        if outcome.kind == "grace" and outcome.record.successor is not None:
            # A concurrent duplicate: answer with the pair the first request got (ours is discarded).
            try:
                first: dict[str, JSONValue] = orjson.loads(self._sealer.open(outcome.record.successor, aad))
            except (Unsealable, orjson.JSONDecodeError):
                first = {}
            if first:
                return first
        # Reuse after the grace window (or a grace pair we cannot open): RFC 9700 §4.14.2.
        await self._store.revoke_family(family.id, now, "refresh_reuse")
        raise _invalid_grant("refresh_reused")

    # -- client_credentials ---------------------------------------------------------------------------

    async def _client_credentials(
        self, form: Mapping[str, str], client: ClientRecord, now: float
    ) -> dict[str, JSONValue]:
        if client.auth_method == "none":
            raise Refusal("unauthorized_client", "client_not_confidential", "client_credentials needs a secret")
        resource = form.get("resource")
        if not resource:
            raise Refusal("invalid_target", "resource_missing", "resource is required")
        offered = self._resources.get(resource)
        if offered is None:
            raise Refusal("invalid_target", "resource_unknown", "resource is not served here")
        allowed = offered if client.scopes is None else offered & client.scopes
        requested = scopes.parse(form.get("scope"))
        if not requested <= allowed:
            raise Refusal("invalid_scope", "scope_not_allowed", "scope is not allowed for this client")
        # A machine client is its own user: the policy decides its scopes as it decides a person's.
        machine = User(id=client.client_id, username=client.client_id)
        granted = self._policy(machine, resource, requested or allowed, client.client_id) & (requested or allowed)
        if requested and not granted:
            raise Refusal("invalid_scope", "scope_not_permitted", "no requested scope may be granted to this client")
        lifetime = self._lifetimes.access_token
        # RFC 6749 §4.4.3: no refresh token; the client authenticates again instead.
        token = self._signer.mint(
            client.client_id, resource, scope=sorted(granted), lifetime=lifetime, client_id=client.client_id, now=now
        )
        return self._body(token, lifetime, granted, None)

    # -- responses ------------------------------------------------------------------------------------

    def _response(
        self, family: FamilyRecord, granted: frozenset[str], now: float, refresh: str | None
    ) -> dict[str, JSONValue]:
        # Never outlive the grant: an access token minted near the family's end expires with it.
        lifetime = min(self._lifetimes.access_token, int(family.expires_at - now))
        if lifetime <= 0:
            raise _invalid_grant("family_expired")
        token = self._signer.mint(
            family.subject,
            family.resource,
            scope=sorted(granted),
            lifetime=lifetime,
            client_id=family.client_id,
            now=now,
            extra=_identity_claims(family),
        )
        return self._body(token, lifetime, granted, refresh)

    @staticmethod
    def _body(token: str, lifetime: int, granted: frozenset[str], refresh: str | None) -> dict[str, JSONValue]:
        body: dict[str, JSONValue] = {"access_token": token, "token_type": "Bearer", "expires_in": lifetime}
        if granted:
            body["scope"] = scopes.render(granted)
        if refresh is not None:
            body["refresh_token"] = refresh
        return body


def _identity_claims(family: FamilyRecord) -> dict[str, object]:
    """``sid`` (the grant, for revocation), and who the user is for policies: ``preferred_username`` (OIDC
    Core §5.1) and ``roles`` (RFC 9068 §2.2.3.1)."""
    claims: dict[str, object] = {"sid": family.id}
    if family.username:
        claims["preferred_username"] = family.username
    if family.roles:
        claims["roles"] = sorted(family.roles)
    return claims
