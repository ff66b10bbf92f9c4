"""Stage ``authenticate``: who is calling? Never open by default.

In order: a verified mTLS client certificate (its SAN URI or CN is the principal), else an RFC 6750
bearer JWT verified for *this endpoint's* resource URL as audience (RFC 8707: a token minted for another
resource is refused, so a token can never be replayed from one server to another), else 401 with
``WWW-Authenticate`` pointing at the RFC 9728 metadata. ``dangerously_allow_unauthenticated`` is the only
way to skip this, and it is refused off loopback by the settings model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import ClassVar, Protocol

from mcp_bastion.errors import TransportRejected
from mcp_bastion.exchange import Exchange, Principal
from mcp_bastion.oauth.access_token import AccessClaims
from mcp_bastion.oauth.bearer import parse_authorization


class TokenVerifier(Protocol):
    async def verify(self, token: str, *, audience: str) -> AccessClaims: ...


class Authenticate:
    name: ClassVar[str] = "authenticate"

    def __init__(
        self,
        *,
        verifier: TokenVerifier,
        resources: Mapping[str, str],
        mtls_identity: Callable[[bytes], str] | None,
        allow_unauthenticated: bool = False,
        roles_claims: Mapping[str, str] | None = None,
        mtls_roles: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        self.verifier = verifier
        self.resources = resources
        """Endpoint name -> the resource URL its tokens must be issued for."""
        self.mtls_identity = mtls_identity
        self.allow_unauthenticated = allow_unauthenticated
        self.roles_claims = dict(roles_claims or {})
        """Issuer -> the claim listing the user's roles (default ``roles``, RFC 9068 §2.2.3.1)."""
        self.mtls_roles = {identity: tuple(roles) for identity, roles in (mtls_roles or {}).items()}
        """Client-certificate identity -> its roles (``tls.client_auth.roles``)."""

    async def __call__(self, exchange: Exchange) -> None:
        http = exchange.http
        if http.client_cert_der is not None and self.mtls_identity is not None:
            try:
                subject = self.mtls_identity(http.client_cert_der)
            except ValueError as exc:
                raise TransportRejected(str(exc), reason="client_cert_no_identity") from exc
            roles = frozenset(self.mtls_roles.get(subject, ()))
            exchange.principal = Principal(subject=subject, issuer="mtls", method="mtls", roles=roles)
            return
        header = http.headers.get("authorization")
        if header is None and self.allow_unauthenticated:
            exchange.principal = Principal(subject="anonymous", issuer="none", method="none")
            return
        token = parse_authorization(header)
        claims = await self.verifier.verify(token, audience=self.resources[exchange.endpoint])
        exchange.principal = Principal(
            subject=claims.subject,
            issuer=claims.issuer,
            method="bearer",
            client_id=claims.client_id,
            scopes=claims.scope,
            expires_at=claims.expires_at,
            roles=_names(claims.raw.get(self.roles_claims.get(claims.issuer, "roles"))),
            preferred_username=_text(claims.raw.get("preferred_username")),
            token=token,
        )


def _names(value: object) -> frozenset[str]:
    """A roles claim: an array of strings or one space-separated string; anything else gives no role."""
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, tuple):  # arrays arrive frozen as tuples
        return frozenset(item for item in value if isinstance(item, str) and item)
    return frozenset()


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
