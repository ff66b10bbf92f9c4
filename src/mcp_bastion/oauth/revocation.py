"""Token status: revocation (RFC 7009), introspection (RFC 7662), and the resource side's revocation check.

RFC 7009 §2.1 (the server checks the token belongs to the requesting client), §2.2 (an invalid or unknown
token still gets 200: the client cannot do anything about it); RFC 7662 §2.2 (``active`` and the claims),
§4 (an inactive token says nothing but ``"active": false``); RFC 9700 §4.14.2 (revoking a refresh token
revokes its grant).

Invariants:
- an access token is believed only after our own key verified it (``AccessTokenVerifier`` with this
  issuer's keys, no leeway); anything else is looked up as a refresh token by digest, or ignored;
- a client learns nothing about tokens it does not own: revoking one is a silent no-op, introspecting one
  answers ``inactive``, exactly as for a token that does not exist;
- ``is_revoked`` reads the store on every call and lets a store error propagate (fail closed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import final

from mcp_bastion.errors import Unauthenticated
from mcp_bastion.jsonrpc.message import JSONValue
from mcp_bastion.oauth import scopes
from mcp_bastion.oauth.access_token import AccessClaims, AccessTokenVerifier, TrustedIssuer
from mcp_bastion.oauth.grants import digest
from mcp_bastion.oauth.jwks import KeySource
from mcp_bastion.oauth.store import ClientRecord, OAuthStore

_INACTIVE: dict[str, JSONValue] = {"active": False}


@final
class TokenStatus:
    """Revocation and introspection of our own tokens, and ``access_token.RevocationCheck``."""

    def __init__(
        self,
        *,
        issuer: str,
        keys: KeySource,
        store: OAuthStore,
        resources: Iterable[str],
        clock: Callable[[], float],
    ) -> None:
        self._issuer = issuer
        self._store = store
        self._resources = tuple(resources)
        self._clock = clock
        self._verifier = AccessTokenVerifier(
            [TrustedIssuer(issuer, keys, algorithms=frozenset({"ES256"}))], leeway_seconds=0, clock=clock, cache_size=0
        )

    async def _access_claims(self, token: str) -> AccessClaims | None:
        """The claims of one of our access tokens that is still valid (revocation aside), or None."""
        if token.count(".") != 2:
            return None
        for resource in self._resources:
            try:
                return await self._verifier.verify(token, audience=resource)
            except Unauthenticated as exc:
                if exc.reason != "token_audience_mismatch":
                    return None
        return None

    async def live_access_claims(self, token: str) -> AccessClaims | None:
        """The claims of one of our access tokens that is valid and not revoked, or None (token exchange)."""
        claims = await self._access_claims(token)
        if claims is None or await self.is_revoked(claims):
            return None
        return claims

    async def revoke(self, token: str, client: ClientRecord) -> None:
        """Revoke ``token`` if it is ``client``'s: a refresh token takes its family, an access token its jti."""
        claims = await self._access_claims(token)
        if claims is not None:
            if claims.client_id == client.client_id and claims.jwt_id is not None:
                await self._store.revoke_access_token(claims.jwt_id, claims.expires_at)
            return
        record = await self._store.get_refresh(digest(token))
        if record is None:
            return
        family = await self._store.get_family(record.family_id)
        if family is not None and family.client_id == client.client_id:
            await self._store.revoke_family(family.id, self._clock(), "revoked_by_client")

    async def introspect(self, token: str, client: ClientRecord) -> dict[str, JSONValue]:
        """RFC 7662 §2.2 answer about ``token`` for ``client`` (its own tokens only)."""
        claims = await self._access_claims(token)
        if claims is not None:
            if claims.client_id != client.client_id or await self.is_revoked(claims):
                return dict(_INACTIVE)
            answer: dict[str, JSONValue] = {
                "active": True,
                "token_type": "Bearer",
                "client_id": client.client_id,
                "sub": claims.subject,
                "aud": list(claims.audience),
                "iss": claims.issuer,
                "exp": int(claims.expires_at),
                "scope": scopes.render(claims.scope),
            }
            if claims.issued_at is not None:
                answer["iat"] = int(claims.issued_at)
            if claims.jwt_id is not None:
                answer["jti"] = claims.jwt_id
            return answer
        record = await self._store.get_refresh(digest(token))
        if record is None or record.rotated_at is not None:
            return dict(_INACTIVE)
        family = await self._store.get_family(record.family_id)
        if family is None or family.client_id != client.client_id:
            return dict(_INACTIVE)
        if family.revoked_at is not None or self._clock() >= family.expires_at:
            return dict(_INACTIVE)
        return {
            "active": True,
            "token_type": "refresh_token",
            "client_id": client.client_id,
            "sub": family.subject,
            "aud": family.resource,
            "iss": self._issuer,
            "exp": int(family.expires_at),
            "scope": scopes.render(family.scopes),
        }

    async def is_revoked(self, claims: AccessClaims) -> bool:
        """True when our token's ``jti`` or family (``sid``) is revoked; other issuers' tokens are not ours."""
        if claims.issuer != self._issuer:
            return False
        family = claims.raw.get("sid")
        return await self._store.is_token_revoked(
            claims.jwt_id, family if isinstance(family, str) else None, self._clock()
        )
