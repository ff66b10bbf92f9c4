"""RFC 8693 token exchange: a gateway (a confidential client) trades a user's access token for a token of
another resource — the upstream it calls for that user — with that resource as audience and the narrowest
scopes the policy grants.

RFC 8693 §2.1 (the request: ``subject_token``, ``subject_token_type``, ``resource``/``audience``,
``scope``, ``requested_token_type``), §2.2.1 (the response with ``issued_token_type``), §2.2.2 (errors:
``invalid_request``, ``invalid_target``), §4.1 (``act``: who acts for the subject).

Invariants:
- the subject token must be one of ours, valid, not revoked (verified like the resource side does), and
  only an access token: ID tokens, refresh tokens and foreign tokens are refused; actor tokens and
  impersonation without ``act`` are not offered;
- the target is one configured exchange audience (``oauth.token_exchange_audiences``), never one of our
  own MCP endpoints (exchanging into a gateway token would launder a token across resources);
- scopes: those requested (all the audience offers when none are), within the audience's, and only those
  the policy lets this user have (``grant_scope``); none left → ``invalid_scope``;
- the new token never outlives the subject token and names the acting client in ``act``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Final, final

from mcp_bastion.jsonrpc.message import JSONValue
from mcp_bastion.oauth import scopes
from mcp_bastion.oauth.access_token import AccessClaims
from mcp_bastion.oauth.refusal import Refusal
from mcp_bastion.oauth.service import ScopePolicy, User
from mcp_bastion.oauth.signer import TokenSigner
from mcp_bastion.oauth.store import ClientRecord

ACCESS_TOKEN_TYPE: Final = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 - a type name
"""RFC 8693 §3."""

SubjectVerifier = Callable[[str], Awaitable[AccessClaims | None]]
"""Our own valid, unrevoked access token's claims, or None."""


@final
class TokenExchanger:
    def __init__(
        self,
        *,
        audiences: Mapping[str, frozenset[str]],
        signer: TokenSigner,
        verify_subject: SubjectVerifier,
        scope_policy: ScopePolicy,
        lifetime: int,
    ) -> None:
        self._audiences = audiences
        self._signer = signer
        self._verify = verify_subject
        self._policy = scope_policy
        self._lifetime = lifetime

    async def exchange(self, form: Mapping[str, str], client: ClientRecord, now: float) -> dict[str, JSONValue]:
        if client.auth_method == "none":
            raise Refusal("unauthorized_client", "client_not_confidential", "token exchange needs a secret")
        subject_token, subject_type = form.get("subject_token"), form.get("subject_token_type")
        if not subject_token or not subject_type:
            raise Refusal("invalid_request", "subject_token_missing", "subject_token and its type are required")
        if subject_type != ACCESS_TOKEN_TYPE:
            raise Refusal("invalid_request", "subject_token_type_unsupported", "only access tokens are exchanged")
        if form.get("actor_token") or form.get("actor_token_type"):
            raise Refusal("invalid_request", "actor_token_unsupported", "actor tokens are not supported")
        requested_type = form.get("requested_token_type")
        if requested_type not in (None, "", ACCESS_TOKEN_TYPE):
            raise Refusal("invalid_request", "requested_token_type_unsupported", "only access tokens are issued")
        target = self._target(form)
        claims = await self._verify(subject_token)
        if claims is None:
            raise Refusal("invalid_grant", "subject_token_invalid", "subject_token is not valid here")
        lifetime = min(self._lifetime, int(claims.expires_at - now))
        if lifetime <= 0:
            raise Refusal("invalid_grant", "subject_token_expired", "subject_token is about to expire")
        offered = self._audiences[target]
        requested = scopes.parse(form.get("scope")) or offered
        if not requested <= offered:
            raise Refusal("invalid_scope", "scope_not_offered", "scope is not offered by this audience")
        raw = claims.raw
        roles = raw.get("roles")
        name = raw.get("preferred_username")
        held = frozenset(role for role in roles if isinstance(role, str)) if isinstance(roles, tuple) else frozenset()
        user = User(id=claims.subject, username=name if isinstance(name, str) else claims.subject, roles=held)
        granted = self._policy(user, target, requested, client.client_id) & requested
        if not granted:
            raise Refusal("invalid_scope", "scope_not_permitted", "no requested scope may be granted to this user")
        extra: dict[str, object] = {"act": {"sub": client.client_id}}
        if isinstance(name, str):
            extra["preferred_username"] = name
        if held:
            extra["roles"] = sorted(held)
        token = self._signer.mint(
            claims.subject,
            target,
            scope=sorted(granted),
            lifetime=lifetime,
            client_id=client.client_id,
            now=now,
            extra=extra,
        )
        return {
            "access_token": token,
            "issued_token_type": ACCESS_TOKEN_TYPE,
            "token_type": "Bearer",
            "expires_in": lifetime,
            "scope": scopes.render(granted),
        }

    def _target(self, form: Mapping[str, str]) -> str:
        resource, audience = form.get("resource"), form.get("audience")
        if resource and audience and resource != audience:
            raise Refusal("invalid_target", "target_ambiguous", "give one target (resource or audience)")
        target = resource or audience
        if not target:
            raise Refusal("invalid_target", "target_missing", "resource or audience is required")
        if target not in self._audiences:
            raise Refusal("invalid_target", "target_unknown", "tokens for this audience are not issued here")
        return target
