"""``delegation.oauthlink.UpstreamOAuth`` against a small authorization server on loopback: tokens used while
fresh, refreshed when expired (and kept when the server rotates nothing), consent again when refreshing
is refused, ``Unavailable`` when the server is down, the issuer of the metadata checked."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mcp_bastion.delegation.oauthlink import LinkRegistry, UpstreamOAuth
from mcp_bastion.delegation.store import CredentialStore
from mcp_bastion.errors import ConfigError, Unavailable, UpstreamAuthorizationRequired
from mcp_bastion.exchange import Principal
from mcp_bastion.vault.envelope import Vault
from mcp_bastion.vault.keyfile import LocalKeyFile
from tests.helpers.recording import recording_upstream
from tests.storage.support import migrated

pytestmark = pytest.mark.anyio

ALICE = Principal("u-alice", "https://gw.example", "bearer")


@dataclass
class AS:
    url: str = ""
    refresh_ok: bool = True
    issuer_override: str | None = None
    forms: list[dict[str, str]] = field(default_factory=list)
    registrations: list[dict[str, object]] = field(default_factory=list)


@pytest.fixture
async def server() -> AsyncIterator[AS]:
    state = AS()

    async def metadata(request: Request) -> Response:
        return JSONResponse(
            {
                "issuer": state.issuer_override or state.url,
                "authorization_endpoint": f"{state.url}/authorize",
                "token_endpoint": f"{state.url}/token",
                "registration_endpoint": f"{state.url}/register",
            }
        )

    async def register(request: Request) -> Response:
        body = orjson.loads(await request.body())
        state.registrations.append(body)
        return JSONResponse({"client_id": f"dyn-{len(state.registrations)}", "client_secret": "dyn-secret"}, 201)

    async def token(request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        state.forms.append(form)
        if form.get("grant_type") == "refresh_token" and not state.refresh_ok:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        number = len(state.forms)
        return JSONResponse({"access_token": f"at-{number}", "expires_in": 300, "token_type": "Bearer"})

    app = Starlette(
        routes=[
            Route("/.well-known/oauth-authorization-server", metadata),
            Route("/token", token, methods=["POST"]),
            Route("/register", register, methods=["POST"]),
        ]
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    state.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(uv.serve(sockets=[sock]))
    while not uv.started:
        await asyncio.sleep(0.01)
    yield state
    uv.should_exit = True
    await asyncio.wait_for(task, 10)
    sock.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CredentialStore]:
    async with migrated(tmp_path / "db.sqlite") as db:
        yield CredentialStore(db, Vault(LocalKeyFile(tmp_path / "vault.key")), cache_seconds=0)


def oauth(server: AS, store: CredentialStore, clock: Clock) -> UpstreamOAuth:
    return UpstreamOAuth(
        upstream="crm",
        issuer=server.url,
        client_id="gw",
        client_secret="s3cret",
        scopes=("crm.read",),
        resource=None,
        gateway_base="https://gw.example",
        store=store,
        links=LinkRegistry(),
        allow_insecure_http=True,
        clock=clock,
    )


async def test_fresh_tokens_are_used_then_refreshed(server: AS, store: CredentialStore) -> None:
    clock = Clock()
    client = oauth(server, store, clock)
    await store.put(
        "crm", ALICE.key, orjson.dumps({"access_token": "old", "refresh_token": "rt-1", "expires_at": clock() + 100})
    )
    assert await client.headers(ALICE) == [(b"authorization", b"Bearer old")]
    clock.now += 100  # within EARLY_SECONDS of expiry: refreshed
    assert await client.headers(ALICE) == [(b"authorization", b"Bearer at-1")]
    assert server.forms[-1] == {"grant_type": "refresh_token", "refresh_token": "rt-1"}
    stored = orjson.loads(await store.secret_for("crm", ALICE.key) or b"{}")
    assert stored["refresh_token"] == "rt-1"  # the server rotated nothing: the old refresh token is kept
    await client.aclose()


async def test_a_refused_refresh_means_consent_again(server: AS, store: CredentialStore) -> None:
    clock = Clock()
    server.refresh_ok = False
    client = oauth(server, store, clock)
    await store.put(
        "crm", ALICE.key, orjson.dumps({"access_token": "old", "refresh_token": "rt", "expires_at": clock() - 1})
    )
    with pytest.raises(UpstreamAuthorizationRequired) as needed:
        await client.headers(ALICE)
    link = client.links.get(needed.value.elicitation_id)
    assert link is not None
    assert link.principal == ALICE
    assert needed.value.url == f"https://gw.example/upstream-auth/link/{link.id}"
    await client.aclose()


async def test_no_tokens_means_consent_and_a_fresh_single_user_link(server: AS, store: CredentialStore) -> None:
    client = oauth(server, store, Clock())
    with pytest.raises(UpstreamAuthorizationRequired) as first:
        await client.headers(ALICE)
    with pytest.raises(UpstreamAuthorizationRequired) as second:
        await client.headers(ALICE)
    assert first.value.elicitation_id != second.value.elicitation_id
    link = client.links.get(first.value.elicitation_id)
    assert link is not None
    url = await client.authorization_url(link)
    assert "code_challenge_method=S256" in url
    assert f"state={link.state}" in url
    assert "s3cret" not in url
    # Only a started link (the user signed in at the gateway) can be taken by its callback.
    assert client.links.take_by_state(link.state) is None
    await client.aclose()


async def test_the_metadata_must_name_the_configured_issuer(server: AS, store: CredentialStore) -> None:
    server.issuer_override = "https://evil.example"
    client = oauth(server, store, Clock())
    link = client.links.create("crm", ALICE)
    with pytest.raises(Unavailable, match="issuer"):
        await client.authorization_url(link)
    await client.aclose()


async def test_an_unreachable_server_is_unavailable(store: CredentialStore) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = oauth(AS(url=f"http://127.0.0.1:{port}"), store, Clock())
    link = client.links.create("crm", ALICE)
    with pytest.raises(Unavailable):
        await client.authorization_url(link)
    await client.aclose()


async def test_plain_http_needs_loopback_and_permission(store: CredentialStore) -> None:
    with pytest.raises(ConfigError):
        UpstreamOAuth(
            upstream="crm",
            issuer="http://as.example",
            client_id="gw",
            client_secret=None,
            scopes=(),
            resource=None,
            gateway_base="https://gw.example",
            store=store,
            links=LinkRegistry(),
            allow_insecure_http=True,
        )


async def test_the_authorization_server_comes_from_the_upstreams_metadata(server: AS, store: CredentialStore) -> None:
    async with recording_upstream() as upstream:
        upstream.authorization_server = server.url
        client = UpstreamOAuth(
            upstream="crm",
            issuer=None,
            client_id="gw",
            client_secret="s3cret",
            scopes=(),
            resource=None,
            gateway_base="https://gw.example",
            store=store,
            upstream_url=upstream.url,
            links=LinkRegistry(),
            allow_insecure_http=True,
        )
        url = await client.authorization_url(client.links.create("crm", ALICE))
        assert url.startswith(f"{server.url}/authorize?")
        await client.aclose()


async def test_metadata_for_another_resource_is_refused(server: AS, store: CredentialStore) -> None:
    async with recording_upstream() as upstream:
        upstream.authorization_server = server.url
        client = UpstreamOAuth(
            upstream="crm",
            issuer=None,
            client_id="gw",
            client_secret=None,
            scopes=(),
            resource=None,
            gateway_base="https://gw.example",
            store=store,
            upstream_url=upstream.url,
            links=LinkRegistry(),
            allow_insecure_http=True,
        )
        upstream.url = "https://elsewhere.example/mcp"  # the document now names another resource: not ours
        with pytest.raises(Unavailable, match="protected-resource"):
            await client.authorization_url(client.links.create("crm", ALICE))
        await client.aclose()


async def test_dynamic_registration_happens_once_and_is_kept_sealed(server: AS, store: CredentialStore) -> None:
    def unregistered() -> UpstreamOAuth:
        return UpstreamOAuth(
            upstream="crm",
            issuer=server.url,
            client_id=None,
            client_secret=None,
            scopes=(),
            resource=None,
            gateway_base="https://gw.example",
            store=store,
            links=LinkRegistry(),
            allow_insecure_http=True,
        )

    first = unregistered()
    link = first.links.create("crm", ALICE)
    url = await first.authorization_url(link)
    assert "client_id=dyn-1" in url
    assert server.registrations[0]["redirect_uris"] == ["https://gw.example/upstream-auth/callback"]
    await first.aclose()
    restarted = unregistered()  # a new process: the registration comes from the vault, not a second POST
    assert "client_id=dyn-1" in await restarted.authorization_url(restarted.links.create("crm", ALICE))
    assert len(server.registrations) == 1
    await restarted.aclose()
