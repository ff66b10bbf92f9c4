"""``delegation.oauthlink.UpstreamOAuth`` against a small authorization server on loopback: tokens used while
fresh, refreshed when expired (and kept when the server rotates nothing), consent again when refreshing
is refused, ``Unavailable`` when the server is down, the issuer of the metadata checked."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mcp_bastion.asgi.pages.upstreamlink import link_routes
from mcp_bastion.delegation.oauthlink import CALLBACK_PATH, LinkStore, StartedLink, UpstreamOAuth
from mcp_bastion.delegation.store import CredentialStore
from mcp_bastion.errors import ConfigError, Unavailable, UpstreamAuthorizationRequired
from mcp_bastion.exchange import Principal
from mcp_bastion.oauth.service import User
from mcp_bastion.storage.db import Database
from mcp_bastion.storage.linkstore import SQLLinkStore
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
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    async with migrated(tmp_path / "db.sqlite") as db:
        yield db


@pytest.fixture
def vault(tmp_path: Path) -> Vault:
    return Vault(LocalKeyFile(tmp_path / "vault.key"))


@pytest.fixture
def store(database: Database, vault: Vault) -> CredentialStore:
    return CredentialStore(database, vault, cache_seconds=0)


@pytest.fixture
def links(database: Database, vault: Vault) -> SQLLinkStore:
    return SQLLinkStore(database, vault)


async def started(links: LinkStore) -> StartedLink:
    """A link for ALICE whose sign-in happened (what ``authorization_url`` is given)."""
    marked = await links.mark_started(await links.create("crm", ALICE))
    assert marked is not None
    return marked[0]


def oauth(server: AS, store: CredentialStore, clock: Clock, links: SQLLinkStore) -> UpstreamOAuth:
    return UpstreamOAuth(
        upstream="crm",
        issuer=server.url,
        client_id="gw",
        client_secret="s3cret",
        scopes=("crm.read",),
        resource=None,
        gateway_base="https://gw.example",
        store=store,
        links=links,
        allow_insecure_http=True,
        clock=clock,
    )


async def test_fresh_tokens_are_used_then_refreshed(server: AS, store: CredentialStore, links: SQLLinkStore) -> None:
    clock = Clock()
    client = oauth(server, store, clock, links)
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


async def test_a_refused_refresh_means_consent_again(server: AS, store: CredentialStore, links: SQLLinkStore) -> None:
    clock = Clock()
    server.refresh_ok = False
    client = oauth(server, store, clock, links)
    await store.put(
        "crm", ALICE.key, orjson.dumps({"access_token": "old", "refresh_token": "rt", "expires_at": clock() - 1})
    )
    with pytest.raises(UpstreamAuthorizationRequired) as needed:
        await client.headers(ALICE)
    link = await client.links.get(needed.value.elicitation_id)
    assert link is not None
    assert link.principal == ALICE
    assert needed.value.url == f"https://gw.example/upstream-auth/link/{link.id}"
    await client.aclose()


async def test_no_tokens_means_consent_and_a_fresh_single_user_link(
    server: AS, store: CredentialStore, links: SQLLinkStore
) -> None:
    client = oauth(server, store, Clock(), links)
    with pytest.raises(UpstreamAuthorizationRequired) as first:
        await client.headers(ALICE)
    with pytest.raises(UpstreamAuthorizationRequired) as second:
        await client.headers(ALICE)
    assert first.value.elicitation_id != second.value.elicitation_id
    link = await client.links.get(first.value.elicitation_id)
    assert link is not None
    marked = await client.links.mark_started(link)
    assert marked is not None
    started, _ = marked
    url = await client.authorization_url(started)
    assert "code_challenge_method=S256" in url
    assert f"state={started.state}" in url
    assert "s3cret" not in url
    assert started.verifier not in url  # only its S256 challenge travels
    await client.aclose()


async def test_the_metadata_must_name_the_configured_issuer(
    server: AS, store: CredentialStore, links: SQLLinkStore
) -> None:
    server.issuer_override = "https://evil.example"
    client = oauth(server, store, Clock(), links)
    link = await started(client.links)
    with pytest.raises(Unavailable, match="issuer"):
        await client.authorization_url(link)
    await client.aclose()


async def test_an_unreachable_server_is_unavailable(store: CredentialStore, links: SQLLinkStore) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = oauth(AS(url=f"http://127.0.0.1:{port}"), store, Clock(), links)
    link = await started(client.links)
    with pytest.raises(Unavailable):
        await client.authorization_url(link)
    await client.aclose()


async def test_plain_http_needs_loopback_and_permission(store: CredentialStore, links: SQLLinkStore) -> None:
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
            links=links,
            allow_insecure_http=True,
        )


async def test_the_authorization_server_comes_from_the_upstreams_metadata(
    server: AS, store: CredentialStore, links: SQLLinkStore
) -> None:
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
            links=links,
            allow_insecure_http=True,
        )
        url = await client.authorization_url(await started(client.links))
        assert url.startswith(f"{server.url}/authorize?")
        await client.aclose()


async def test_metadata_for_another_resource_is_refused(
    server: AS, store: CredentialStore, links: SQLLinkStore
) -> None:
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
            links=links,
            allow_insecure_http=True,
        )
        upstream.url = "https://elsewhere.example/mcp"  # the document now names another resource: not ours
        with pytest.raises(Unavailable, match="protected-resource"):
            await client.authorization_url(await started(client.links))
        await client.aclose()


async def test_dynamic_registration_happens_once_and_is_kept_sealed(
    server: AS, store: CredentialStore, links: SQLLinkStore
) -> None:
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
            links=links,
            allow_insecure_http=True,
        )

    first = unregistered()
    link = await started(first.links)
    url = await first.authorization_url(link)
    assert "client_id=dyn-1" in url
    assert server.registrations[0]["redirect_uris"] == ["https://gw.example/upstream-auth/callback"]
    await first.aclose()
    restarted = unregistered()  # a new process: the registration comes from the vault, not a second POST
    assert "client_id=dyn-1" in await restarted.authorization_url(await started(restarted.links))
    assert len(server.registrations) == 1
    await restarted.aclose()


class Alice:
    """The user directory of the gateway: only alice, whatever the password (not what is tested here)."""

    async def authenticate(self, username: str, password: str) -> User:
        return User(id=ALICE.subject, username="alice")


class Replicas(httpx.AsyncBaseTransport):
    """One browser, and a load balancer that sends each request to the replica the test names."""

    def __init__(self, *apps: Starlette) -> None:
        self.apps = [httpx.ASGITransport(app=app) for app in apps]
        self.target = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.apps[self.target].handle_async_request(request)


async def test_a_link_made_on_one_replica_completes_on_another(server: AS, tmp_path: Path) -> None:
    """Two gateways (own engines, vault objects and UpstreamOAuth) over one database file and vault key,
    as two processes would be: the link is made on A, shown by B, signed in on A, called back on B."""
    async with migrated(tmp_path / "shared.db") as db_a, migrated(tmp_path / "shared.db") as db_b:
        clients, apps = [], []
        for db in (db_a, db_b):
            vault = Vault(LocalKeyFile(tmp_path / "vault.key"))
            client = oauth(server, CredentialStore(db, vault, cache_seconds=0), Clock(), SQLLinkStore(db, vault))
            clients.append(client)
            apps.append(Starlette(routes=link_routes({"crm": client}, client.links, Alice(), issuer=ALICE.issuer)))
        balancer = Replicas(*apps)
        with pytest.raises(UpstreamAuthorizationRequired) as needed:
            await clients[0].headers(ALICE)
        async with httpx.AsyncClient(transport=balancer, base_url="https://gw.example") as browser:
            balancer.target = 1
            shown = await browser.get(needed.value.url)
            assert shown.status_code == 200
            found = re.search(r'name="csrf" value="([^"]+)"', shown.text)
            assert found is not None
            balancer.target = 0
            form = {"csrf": found.group(1), "username": "alice", "password": "pw"}
            to_as = await browser.post(needed.value.url, data=form)
            assert to_as.status_code == 303, to_as.text
            authorize = parse_qs(urlsplit(to_as.headers["location"]).query)
            balancer.target = 1
            done = await browser.get(CALLBACK_PATH, params={"code": "the-code", "state": authorize["state"][0]})
            assert done.status_code == 200, done.text
            again = await browser.get(CALLBACK_PATH, params={"code": "the-code", "state": authorize["state"][0]})
            assert again.status_code == 404  # single use, whichever replica is asked
        verifier = server.forms[-1]["code_verifier"]
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        assert authorize["code_challenge"] == [challenge]  # B redeemed with the verifier A's sign-in made
        assert await clients[0].headers(ALICE) == [(b"authorization", b"Bearer at-1")]
        for client in clients:
            await client.aclose()
