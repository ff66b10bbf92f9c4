"""An in-memory OpenID Provider behind the ``HTTPTransport`` seam, for unit tests of the pure parts.

It follows OIDC Core closely enough for a correct client to log in (PKCE checked, codes single-use, client
authentication checked), and lets a test tamper with exactly one thing: the discovery document, the token
response, or the ID token's header, claims or signing key. The real provider is in ``provider/server.mjs``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, urlsplit

import orjson
from joserfc.jwk import ECKey, OKPKey, RSAKey

from mcp_bastion.oauth.jwks import KeySet
from mcp_bastion.oauth.oidc_client import HTTPResponse, basic_credentials
from mcp_bastion.oauth.pkce import s256
from tests.oauth.support import compact, signer

ISSUER = "https://idp.example"
CLIENT_ID = "bastion-gw"
CLIENT_SECRET = "s3cret:with/odd+chars"
REDIRECT_URI = "https://gw.example/login/federated/callback"
DROP = object()
"""As a claim or header value: leave that member out."""

SigningKey = ECKey | OKPKey | RSAKey


def json_response(document: object, status: int = 200) -> HTTPResponse:
    return HTTPResponse(status, "application/json", orjson.dumps(document))


@dataclass
class Account:
    sub: str = "248289761001"
    claims: dict[str, object] = field(
        default_factory=lambda: {
            "preferred_username": "alice",
            "email": "alice@example.com",
            "email_verified": True,
            "groups": ["analysts"],
        }
    )


@dataclass
class _Grant:
    challenge: str
    nonce: str
    redirect_uri: str
    account: Account


@dataclass
class FakeIdP:
    """The IdP and its network in one object. ``requests`` records (method, url) of every call."""

    key: SigningKey
    alg: str = "ES256"
    issuer: str = ISSUER
    client_secret: str | None = CLIENT_SECRET
    account: Account = field(default_factory=Account)
    claims_in_id_token: bool = True
    send_iss: bool = True
    metadata_overrides: dict[str, object] = field(default_factory=dict)
    id_token_header: dict[str, object] = field(default_factory=dict)
    """Merged over the ID token's header (``DROP`` removes a member)."""
    id_token_claims: dict[str, object] = field(default_factory=dict)
    """Merged over the ID token's claims (``DROP`` removes one)."""
    sign_with: Callable[[bytes], bytes] | None = None
    """Signs the ID token instead of ``key``."""
    token_response: Callable[[dict[str, object]], HTTPResponse] | None = None
    """Given the honest token response document, returns what is sent instead."""
    userinfo_overrides: dict[str, object] = field(default_factory=dict)
    now: float = 1_800_000_000.0
    requests: list[tuple[str, str]] = field(default_factory=list)
    _grants: dict[str, _Grant] = field(default_factory=dict)
    _access_tokens: dict[str, Account] = field(default_factory=dict)

    def metadata(self) -> dict[str, object]:
        document: dict[str, object] = {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize?tenant=acme",
            "token_endpoint": f"{self.issuer}/token",
            "userinfo_endpoint": f"{self.issuer}/userinfo",
            "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256", "RS256", "EdDSA"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "none"],
            "authorization_response_iss_parameter_supported": self.send_iss,
        }
        document.update(self.metadata_overrides)
        return {k: v for k, v in document.items() if v is not DROP}

    def keys(self, jwks_uri: str) -> KeySet:
        """The ``keys`` seam of ``FederatedLogin``: the IdP's public key set."""
        assert jwks_uri == f"{self.issuer}/jwks"
        return KeySet([type(self.key).import_key(self.key.as_dict(private=False))])

    # --- the front channel: what the browser would do at the IdP ---

    def authorize(self, url: str, *, deny: bool = False) -> dict[str, str]:
        """The user logs in at the IdP; returns the query of the redirect back to the client."""
        parts = urlsplit(url)
        assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{self.issuer}/authorize"
        query = dict(parse_qsl(parts.query))
        assert query["response_type"] == "code"
        assert query["client_id"] == CLIENT_ID
        assert query["code_challenge_method"] == "S256"
        assert "openid" in query["scope"].split()
        response = {"state": query["state"]}
        if self.send_iss:
            response["iss"] = self.issuer
        if deny:
            return {**response, "error": "access_denied", "error_description": "the user said no"}
        code = secrets.token_urlsafe(16)
        self._grants[code] = _Grant(query["code_challenge"], query["nonce"], query["redirect_uri"], self.account)
        return {**response, "code": code}

    # --- the back channel: the HTTPTransport protocol ---

    async def request(
        self,
        method: Literal["GET", "POST"],
        url: str,
        *,
        headers: Mapping[str, str],
        form: Mapping[str, str] | None = None,
    ) -> HTTPResponse:
        self.requests.append((method, url))
        if method == "GET" and url == f"{self.issuer}/.well-known/openid-configuration":
            return json_response(self.metadata())
        if method == "POST" and url == f"{self.issuer}/token":
            assert form is not None
            return self._token(headers, form)
        if method == "GET" and url == f"{self.issuer}/userinfo":
            account = self._access_tokens.get(headers.get("Authorization", "").removeprefix("Bearer "))
            if account is None:
                return json_response({"error": "invalid_token"}, 401)
            return json_response({**self._claims(account), **self.userinfo_overrides})
        return HTTPResponse(404, "text/plain", b"not found")

    async def aclose(self) -> None:
        pass

    def _claims(self, account: Account) -> dict[str, object]:
        return {"sub": account.sub, **account.claims}

    def _token(self, headers: Mapping[str, str], form: Mapping[str, str]) -> HTTPResponse:
        if self.client_secret is None:
            authenticated = form.get("client_id") == CLIENT_ID and "Authorization" not in headers
        else:
            authenticated = headers.get("Authorization") == basic_credentials(CLIENT_ID, self.client_secret)
        if not authenticated:
            return json_response({"error": "invalid_client"}, 401)
        grant = self._grants.pop(form.get("code", ""), None)  # single use
        if (
            form.get("grant_type") != "authorization_code"
            or grant is None
            or grant.redirect_uri != form.get("redirect_uri")
            or s256(form.get("code_verifier", "")) != grant.challenge
        ):
            return json_response({"error": "invalid_grant", "error_description": "nope"}, 400)
        access_token = secrets.token_urlsafe(24)
        self._access_tokens[access_token] = grant.account
        document: dict[str, object] = {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": 300,
            "id_token": self.id_token(grant.nonce, grant.account),
        }
        return self.token_response(document) if self.token_response else json_response(document)

    def id_token(self, nonce: str, account: Account | None = None) -> str:
        account = account or self.account
        claims: dict[str, object] = {
            "iss": self.issuer,
            "sub": account.sub,
            "aud": CLIENT_ID,
            "exp": self.now + 300,
            "iat": self.now,
            "nonce": nonce,
            "auth_time": self.now - 5,
        }
        if self.claims_in_id_token:
            claims.update(account.claims)
        claims.update(self.id_token_claims)
        header: dict[str, object] = {"alg": self.alg, "kid": self.key.kid, "typ": "JWT"}
        header.update(self.id_token_header)
        sign = self.sign_with or signer(self.alg, self.key)
        return compact(
            {k: v for k, v in header.items() if v is not DROP},
            {k: v for k, v in claims.items() if v is not DROP},
            sign,
        )


def unsigned(header: Mapping[str, object], claims: Mapping[str, object]) -> str:
    """An unsecured JWT (``alg: none``, RFC 7519 §6): empty signature."""
    return compact(header, claims, lambda _message: b"")
