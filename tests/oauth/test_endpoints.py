"""The JSON endpoints (``asgi.oauth``) over HTTP, in process: status codes, RFC 6749 §5.1/§5.2 bodies and
``no-store`` headers, body limits, and failures that never leak details."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from starlette.applications import Starlette

from mcp_bastion.asgi.oauth import MAX_FORM_BYTES, oauth_routes
from mcp_bastion.errors import Unavailable
from mcp_bastion.oauth.asmetadata import Endpoints
from mcp_bastion.oauth.localissuer import LocalIssuer
from mcp_bastion.oauth.memstore import MemoryOAuthStore
from mcp_bastion.oauth.sealing import MemorySealer
from mcp_bastion.oauth.server import AuthorizationServer
from tests.oauth.asworld import REDIRECT, RESOURCES, VERIFIER, World, basic, make_world, signing_key


@dataclass
class Harness:
    world: World
    http: httpx.AsyncClient


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    world = make_world()
    app = Starlette(routes=oauth_routes(world.server))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://as.example") as http:
        yield Harness(world, http)


def _no_store(response: httpx.Response) -> None:
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"


def _oauth_error(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    _no_store(response)
    body = response.json()
    assert body["error"] == error
    assert set(body) <= {"error", "error_description"}


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/.well-known/oauth-authorization-server", id="rfc8414"),
        pytest.param("/.well-known/openid-configuration", id="openid-alias"),
    ],
)
@pytest.mark.anyio
async def test_metadata(harness: Harness, path: str) -> None:
    response = await harness.http.get(path)
    assert response.status_code == 200
    assert response.json() == harness.world.server.metadata()
    assert response.json()["issuer"] == "https://as.example"


@pytest.mark.anyio
async def test_jwks(harness: Harness) -> None:
    response = await harness.http.get("/oauth/jwks.json")
    assert response.status_code == 200
    keys = response.json()["keys"]
    assert [key["kid"] for key in keys] == [harness.world.signer.kid]
    assert all("d" not in key for key in keys)


@pytest.mark.anyio
async def test_register_then_code_flow_then_revoke(harness: Harness) -> None:
    world, http = harness.world, harness.http
    registered = await http.post(
        "/oauth/register",
        json={
            "redirect_uris": [REDIRECT],
            "token_endpoint_auth_method": "client_secret_basic",
            "grant_types": ["authorization_code", "refresh_token"],
            "client_name": "HTTP App",
        },
    )
    assert registered.status_code == 201
    _no_store(registered)
    client_id, secret = registered.json()["client_id"], registered.json()["client_secret"]
    auth = {"authorization": basic(client_id, secret)}

    code = await world.code(client_id)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": VERIFIER}
    token = await http.post("/oauth/token", data=form, headers=auth)
    assert token.status_code == 200
    assert token.headers["content-type"] == "application/json"
    _no_store(token)
    assert token.json()["token_type"] == "Bearer"

    introspected = await http.post("/oauth/introspect", data={"token": token.json()["access_token"]}, headers=auth)
    assert introspected.status_code == 200
    _no_store(introspected)
    assert introspected.json()["active"] is True

    revoked = await http.post("/oauth/revoke", data={"token": token.json()["refresh_token"]}, headers=auth)
    assert (revoked.status_code, revoked.content) == (200, b"")
    _no_store(revoked)
    again = await http.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": token.json()["refresh_token"]},
        headers=auth,
    )
    _oauth_error(again, 400, "invalid_grant")


@pytest.mark.anyio
async def test_invalid_client_is_401_with_basic_challenge(harness: Harness) -> None:
    response = await harness.http.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, headers={"authorization": basic("nobody", "x")}
    )
    _oauth_error(response, 401, "invalid_client")
    assert response.headers["www-authenticate"].startswith("Basic ")


@pytest.mark.parametrize(
    ("body", "content_type", "status", "error"),
    [
        pytest.param(
            b"grant_type=authorization_code&grant_type=refresh_token",
            "application/x-www-form-urlencoded",
            400,
            "invalid_request",
            id="repeated-parameter",
        ),
        pytest.param(
            b'{"grant_type": "client_credentials"}', "application/json", 400, "invalid_request", id="json-body"
        ),
        pytest.param(b"grant_type=%ff", "application/x-www-form-urlencoded", 400, "invalid_request", id="not-utf8"),
        pytest.param(
            b"a" * (MAX_FORM_BYTES + 1), "application/x-www-form-urlencoded", 413, "invalid_request", id="too-large"
        ),
        pytest.param(
            b"client_id=x&grant_type=",
            "application/x-www-form-urlencoded",
            401,
            "invalid_client",
            id="unknown-client-empty-grant",
        ),
    ],
)
@pytest.mark.anyio
async def test_token_request_errors(harness: Harness, body: bytes, content_type: str, status: int, error: str) -> None:
    response = await harness.http.post("/oauth/token", content=body, headers={"content-type": content_type})
    _oauth_error(response, status, error)


@pytest.mark.anyio
async def test_empty_parameter_counts_as_absent(harness: Harness) -> None:
    client_id, _ = await harness.world.register()
    response = await harness.http.post("/oauth/token", data={"client_id": client_id, "grant_type": ""})
    _oauth_error(response, 400, "invalid_request")


@pytest.mark.anyio
async def test_token_endpoint_is_post_only(harness: Harness) -> None:
    assert (await harness.http.get("/oauth/token")).status_code == 405


@pytest.mark.parametrize(
    ("body", "content_type", "status", "error"),
    [
        pytest.param(b"{", "application/json", 400, "invalid_client_metadata", id="not-json"),
        pytest.param(b"[]", "application/json", 400, "invalid_client_metadata", id="not-object"),
        pytest.param(
            b'{"redirect_uris": ["http://evil.example/cb"]}',
            "application/json",
            400,
            "invalid_redirect_uri",
            id="bad-redirect",
        ),
        pytest.param(b"redirect_uris=x", "application/x-www-form-urlencoded", 400, "invalid_request", id="form-body"),
        pytest.param(b"[" * 70_000, "application/json", 413, "invalid_request", id="too-large"),
    ],
)
@pytest.mark.anyio
async def test_register_errors(harness: Harness, body: bytes, content_type: str, status: int, error: str) -> None:
    response = await harness.http.post("/oauth/register", content=body, headers={"content-type": content_type})
    _oauth_error(response, status, error)


async def _app(server: AuthorizationServer) -> httpx.AsyncClient:
    app = Starlette(routes=oauth_routes(server))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://as.example")


@pytest.mark.parametrize(
    ("policy", "authorization", "status", "error", "challenge"),
    [
        pytest.param("off", None, 403, "access_denied", None, id="off"),
        pytest.param("token", None, 401, "invalid_token", "Bearer", id="token-missing"),
        pytest.param("token", "Bearer iat-1", 201, None, None, id="token-given"),
    ],
)
@pytest.mark.anyio
async def test_registration_policy(
    policy: str, authorization: str | None, status: int, error: str | None, challenge: str | None
) -> None:
    world = make_world(registration_policy=policy, initial_access_tokens=["iat-1"])
    headers = {} if authorization is None else {"authorization": authorization}
    async with await _app(world.server) as http:
        response = await http.post("/oauth/register", json={"redirect_uris": [REDIRECT]}, headers=headers)
    if error is None:
        assert response.status_code == status
        return
    _oauth_error(response, status, error)
    if challenge is not None:
        assert response.headers["www-authenticate"].startswith(challenge)


@pytest.mark.parametrize(
    ("failure", "status", "error"),
    [
        pytest.param(RuntimeError("password=hunter2 at db.internal"), 500, "server_error", id="bug"),
        pytest.param(Unavailable("db.internal unreachable"), 503, "temporarily_unavailable", id="store-down"),
    ],
)
@pytest.mark.anyio
async def test_failures_are_opaque(failure: Exception, status: int, error: str) -> None:
    store = MemoryOAuthStore()  # made to fail with secret-looking messages that must not reach the client
    server = AuthorizationServer(
        issuer="https://as.example",
        signer=LocalIssuer(signing_key(), "https://as.example"),
        store=store,
        sealer=MemorySealer(),
        resources=RESOURCES,
    )
    store.fail = failure
    async with await _app(server) as http:
        response = await http.post("/oauth/token", data={"grant_type": "refresh_token", "client_id": "c"})
    _oauth_error(response, status, error)
    assert b"hunter2" not in response.content
    assert b"db.internal" not in response.content
    assert b"Traceback" not in response.content


def test_routes_follow_the_issuer_path() -> None:
    world = make_world()
    paths = sorted(route.path for route in oauth_routes(world.server))
    assert paths == sorted(
        [
            "/oauth/token",
            "/oauth/register",
            "/oauth/revoke",
            "/oauth/introspect",
            "/.well-known/oauth-authorization-server",
            "/.well-known/openid-configuration",
            "/oauth/jwks.json",
        ]
    )
    assert Endpoints.for_issuer("https://as.example").jwks.endswith("/oauth/jwks.json")
