"""End to end: the mcp SDK's own OAuth client against the gateway's authorization server.

Unauthenticated call → 401 → RFC 9728 discovery → RFC 8414 metadata → dynamic registration → /authorize
(the test logs in and consents through the real pages) → token → tool call through the gateway →
refresh → revoke → refused.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

from tests.e2e.browserless import log_in_and_consent
from tests.e2e.gateway import RunningGateway, running_gateway
from tests.e2e.test_refusals import MODERN_HEADERS, call
from tests.helpers.procs import serve_module

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

PASSWORD = "correct horse battery staple"
SCOPES = {"customers.read": "Read customer records", "customers.write": "Change customer records"}


class Memory:
    """The client's token storage (``mcp.client.auth.TokenStorage``)."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    async with serve_module("mcp_bastion.demo.customers", "--http", "--port", "0") as upstream_url:
        upstreams = {"up": {"url": upstream_url, "allow_insecure_http": True, "scopes": SCOPES}}
        async with running_gateway(tmp_path, upstreams) as running:
            authorization = running.gateway.authorization
            assert authorization is not None
            await authorization.users.add("alice", PASSWORD, roles=["analyst"])
            yield running


def provider(gw: RunningGateway, storage: Memory) -> OAuthClientProvider:
    landed: list[AuthorizationCodeResult] = []

    async def user_at_the_browser(url: str) -> None:
        back = await log_in_and_consent(url, username="alice", password=PASSWORD, ca=gw.client_ssl())
        params = back.params
        assert params.get("iss") == gw.base_url  # RFC 9207: the client can tell which server answered
        landed.append(AuthorizationCodeResult(code=params["code"], state=params.get("state"), iss=params["iss"]))

    async def callback() -> AuthorizationCodeResult:
        return landed.pop()

    metadata = OAuthClientMetadata(
        client_name="Test Agent",
        redirect_uris=["http://127.0.0.1:33418/callback"],
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
        token_endpoint_auth_method="none",
        scope="customers.read",
    )
    return OAuthClientProvider(gw.url("up"), metadata, storage, user_at_the_browser, callback)


async def test_sdk_client_logs_in_calls_refreshes_and_is_revoked(gw: RunningGateway) -> None:
    storage = Memory()
    auth = provider(gw, storage)
    async with httpx2.AsyncClient(verify=gw.client_ssl(), auth=auth, timeout=30) as http:
        async with Client(streamable_http_client(gw.url("up"), http_client=http), mode="auto") as client:
            result = await client.call_tool("get_customer", {"customer_id": "C001"})
            assert not result.is_error
    assert storage.tokens is not None
    assert storage.client is not None
    first = storage.tokens
    assert first.refresh_token
    assert first.scope
    assert set(first.scope.split()) <= set(SCOPES)
    records = gw.audit()
    assert any(
        r["method"] == "tools/call" and r["principal"] and r["client"] == storage.client.client_id for r in records
    )

    # Refresh: a new pair; the old refresh token is spent (rotation).
    token_url = f"{gw.base_url}/oauth/token"
    async with httpx2.AsyncClient(verify=gw.client_ssl(), timeout=30) as http:
        form = {
            "grant_type": "refresh_token",
            "refresh_token": first.refresh_token,
            "client_id": storage.client.client_id,
        }
        refreshed = await http.post(token_url, data=form)
        assert refreshed.status_code == 200, refreshed.text
        second = refreshed.json()
        assert second["refresh_token"] != first.refresh_token
        assert second["access_token"] != first.access_token

        works = await http.post(
            gw.url("up"), json=call(), headers={**MODERN_HEADERS, "authorization": f"Bearer {second['access_token']}"}
        )
        assert works.status_code == 200, works.text

        # Revoke the refresh token: the whole grant ends, its access tokens too.
        revoked = await http.post(
            f"{gw.base_url}/oauth/revoke",
            data={"token": second["refresh_token"], "client_id": storage.client.client_id},
        )
        assert revoked.status_code == 200, revoked.text
        refused = await http.post(
            gw.url("up"), json=call(), headers={**MODERN_HEADERS, "authorization": f"Bearer {second['access_token']}"}
        )
        assert refused.status_code == 401
        assert refused.json()["error"]["data"]["reason"] == "token_revoked"
        again = await http.post(token_url, data={**form, "refresh_token": second["refresh_token"]})
        assert again.status_code == 400
        assert again.json()["error"] == "invalid_grant"


async def test_refresh_token_reuse_revokes_the_family(gw: RunningGateway) -> None:
    storage = Memory()
    async with httpx2.AsyncClient(verify=gw.client_ssl(), auth=provider(gw, storage), timeout=30) as http:
        async with Client(streamable_http_client(gw.url("up"), http_client=http), mode="legacy") as client:
            await client.list_tools()
    assert storage.tokens is not None
    assert storage.client is not None
    stolen = storage.tokens.refresh_token
    form = {"grant_type": "refresh_token", "refresh_token": stolen, "client_id": storage.client.client_id}
    async with httpx2.AsyncClient(verify=gw.client_ssl(), timeout=30) as http:
        legit = (await http.post(f"{gw.base_url}/oauth/token", data=form)).json()
        # Outside the grace window an attacker replays the rotated token (the grace is 5 s: wait it out by
        # moving the server's clock instead of sleeping).
        authorization = gw.gateway.authorization
        assert authorization is not None
        clock = authorization.server._clock
        authorization.server._clock = lambda: clock() + 60
        replay = await http.post(f"{gw.base_url}/oauth/token", data=form)
        assert replay.status_code == 400
        assert replay.json()["error"] == "invalid_grant"
        # ... and the legitimate new pair is dead too: the whole family was revoked.
        after = await http.post(
            gw.url("up"), json=call(), headers={**MODERN_HEADERS, "authorization": f"Bearer {legit['access_token']}"}
        )
        assert after.status_code == 401
        follow_up = await http.post(
            f"{gw.base_url}/oauth/token", data={**form, "refresh_token": legit["refresh_token"]}
        )
        assert follow_up.json()["error"] == "invalid_grant"


async def test_discovery_documents(gw: RunningGateway) -> None:
    async with httpx2.AsyncClient(verify=gw.client_ssl(), timeout=30) as http:
        unauthenticated = await http.post(gw.url("up"), json=call(), headers=MODERN_HEADERS)
        assert unauthenticated.status_code == 401
        prm = (await http.get(f"{gw.base_url}/.well-known/oauth-protected-resource/mcp/up")).json()
        assert prm["authorization_servers"] == [gw.base_url]
        assert set(prm["scopes_supported"]) == set(SCOPES)
        meta = (await http.get(f"{gw.base_url}/.well-known/oauth-authorization-server")).json()
    assert meta["issuer"] == gw.base_url
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["authorization_response_iss_parameter_supported"] is True
    assert meta["token_endpoint"] == f"{gw.base_url}/oauth/token"
