"""A small authorization-server world for the AS tests: server, in-memory store, test clock, seeded randomness,
and helpers that walk a client through registration, consent and the token endpoint."""

from __future__ import annotations

import base64
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote_plus, urlsplit

import orjson
from joserfc.jwk import ECKey

from mcp_bastion.jsonrpc.message import JSONValue
from mcp_bastion.oauth.access_token import AccessClaims, AccessTokenVerifier, TrustedIssuer
from mcp_bastion.oauth.grants import Lifetimes
from mcp_bastion.oauth.localissuer import LocalIssuer
from mcp_bastion.oauth.memstore import MemoryOAuthStore
from mcp_bastion.oauth.sealing import MemorySealer
from mcp_bastion.oauth.server import AuthorizationServer
from mcp_bastion.oauth.service import User
from tests.oauth.support import FakeClock

ISSUER = "https://as.example"
RESOURCE = "https://gw.example/mcp/customers"
OTHER_RESOURCE = "https://gw.example/mcp/billing"
REDIRECT = "https://app.example/callback"
LOOPBACK_REDIRECT = "http://127.0.0.1/callback"
NOW = 1_800_000_000.0

_VECTOR = orjson.loads((Path(__file__).parent.parent / "vectors" / "rfc7636_appendix_b.json").read_bytes())
VERIFIER: str = _VECTOR["code_verifier"]
CHALLENGE: str = _VECTOR["code_challenge"]

ALICE = User(id="u-alice", username="alice", roles=frozenset({"staff"}))
BOB = User(id="u-bob", username="bob")

RESOURCES: Mapping[str, Mapping[str, str]] = {
    RESOURCE: {"customers:read": "Read customer records", "customers:write": "Change customer records"},
    OTHER_RESOURCE: {"billing:read": "Read invoices"},
}


def seeded(seed: int) -> Callable[[int], bytes]:
    """Deterministic randomness for a test (never for real keys)."""
    generator = random.Random(seed)
    return generator.randbytes


@cache
def signing_key() -> ECKey:
    return ECKey.generate_key("P-256", private=True)


@dataclass
class World:
    server: AuthorizationServer
    store: MemoryOAuthStore
    clock: FakeClock
    signer: LocalIssuer
    verifier: AccessTokenVerifier = field(init=False)

    def __post_init__(self) -> None:
        self.verifier = AccessTokenVerifier(
            [TrustedIssuer(ISSUER, self.signer.public_keys(), algorithms=frozenset({"ES256"}))],
            clock=self.clock,
            revocation=self.server,
            leeway_seconds=0,
        )

    async def verify(self, token: str, audience: str = RESOURCE) -> AccessClaims:
        return await self.verifier.verify(token, audience=audience)

    async def register(self, **metadata: Any) -> tuple[str, str | None]:
        """Register a client (public ``none`` with the code + refresh grants unless told otherwise)."""
        body: dict[str, Any] = {
            "redirect_uris": [REDIRECT],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "client_name": "Test App",
        }
        body.update(metadata)
        response = await self.server.register(body, None)
        client_id = response["client_id"]
        secret = response.get("client_secret")
        assert isinstance(client_id, str)
        assert secret is None or isinstance(secret, str)
        return client_id, secret

    def query(self, client_id: str, /, **overrides: str | None) -> dict[str, str]:
        params: dict[str, str | None] = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": REDIRECT,
            "code_challenge": CHALLENGE,
            "code_challenge_method": "S256",
            "resource": RESOURCE,
            "state": "state-123",
            "scope": "customers:read",
        }
        params.update(overrides)
        return {name: value for name, value in params.items() if value is not None}

    async def code(self, client_id: str, /, user: User = ALICE, **overrides: str | None) -> str:
        """Run /authorize and consent; return the code from the redirect."""
        pending = await self.server.begin(self.query(client_id, **overrides))
        url = await self.server.approve(pending.id, user, frozenset(pending.scopes))
        return redirect_params(url)["code"]

    async def token(
        self, form: Mapping[str, str], *, secret: str | None = None, client_id: str | None = None
    ) -> dict[str, JSONValue]:
        authorization = None
        if secret is not None:
            assert client_id is not None
            authorization = basic(client_id, secret)
        return await self.server.token(dict(form), authorization)

    async def redeem(
        self, client_id: str, code: str, *, secret: str | None = None, **overrides: str
    ) -> dict[str, JSONValue]:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "code_verifier": VERIFIER,
        }
        if secret is None:
            form["client_id"] = client_id
        form.update(overrides)
        return await self.token(form, secret=secret, client_id=client_id)

    async def refresh(self, client_id: str, refresh_token: str, **overrides: str) -> dict[str, JSONValue]:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client_id}
        form.update(overrides)
        return await self.token(form)


def make_world(*, seed: int = 1, lifetimes: Lifetimes | None = None, **kwargs: Any) -> World:
    clock = FakeClock(NOW)
    store = MemoryOAuthStore()
    signer = LocalIssuer(signing_key(), ISSUER)
    server = AuthorizationServer(
        issuer=ISSUER,
        signer=signer,
        store=store,
        sealer=MemorySealer(random=seeded(seed + 1000)),
        resources=RESOURCES,
        lifetimes=lifetimes,
        clock=clock,
        random=seeded(seed),
        **kwargs,
    )
    return World(server, store, clock, signer)


def basic(client_id: str, secret: str) -> str:
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def redirect_params(url: str) -> dict[str, str]:
    """The query parameters of a redirect URL, each exactly once."""
    parsed = parse_qs(urlsplit(url).query, keep_blank_values=True)
    assert all(len(values) == 1 for values in parsed.values()), parsed
    return {name: values[0] for name, values in parsed.items()}


def string(value: JSONValue) -> str:
    assert isinstance(value, str)
    return value
