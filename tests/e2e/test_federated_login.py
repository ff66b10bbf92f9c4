"""End to end: federated login through a real third-party OpenID Provider (npm oidc-provider, certified, on
loopback), the real gateway (TLS, SQLite, authorization server, pages) and the mcp SDK's ``OAuthClientProvider``.

The user at the browser presses "Sign in with Corp SSO" on the gateway's login page, signs in at the
provider's own pages as alice, comes back through the gateway's callback, consents, and the SDK client calls a
tool through the gateway; the audit record names ``<issuer>#<sub>`` (pairwise at this provider).

Ports: the provider must know our redirect URI (so the gateway's port) before it starts, and the gateway must
know the provider's issuer (so its port) when it starts. So the gateway is reached through a TCP pass-through
at its public URL (``server.public_url``; TLS stays end to end, as behind a layer-4 load balancer), whose
port is chosen first.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import socket
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx2
import pytest
from anyio.abc import ByteStream, SocketAttribute, SocketStream
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata

from mcp_bastion.asgi.pages.csrf import Signer
from mcp_bastion.asgi.pages.statecookie import StateCookies
from mcp_bastion.oauth.federation import STATE_LIFETIME_SECONDS, FederationState
from tests.e2e.browserless import forms, press_sign_in_with, sign_in_with
from tests.e2e.gateway import RunningGateway, running_gateway
from tests.e2e.test_browser_gateway import authorize_url
from tests.e2e.test_oauth_flow import Memory
from tests.federation import realidp
from tests.federation.realidp import CLIENT_ID, CLIENT_SECRET, browse_to_callback, running_provider
from tests.helpers.procs import serve_module
from tests.pages.fakes import reason

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

IDP = "corp"
SECRET_ENV = "BASTION_TEST_CORP_IDP_SECRET"
SCOPES = {"customers.read": "Read customer records"}
STATE_COOKIE = "__Secure-bastion-federation"
BROWSER_COOKIE = "__Host-bastion-browser"


async def _pipe(source: ByteStream, sink: ByteStream) -> None:
    # A peer closing or resetting its side ends this direction; the other one ends on its own.
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        async for chunk in source:
            await sink.send(chunk)
        await sink.send_eof()


class Forwarder:
    """A TCP pass-through to the gateway, at the port its public URL names."""

    def __init__(self) -> None:
        self.target: int | None = None

    async def handle(self, client: SocketStream) -> None:
        assert self.target is not None, "connection before the gateway started"
        async with client, await anyio.connect_tcp("127.0.0.1", self.target) as upstream:
            async with anyio.create_task_group() as pipes:
                pipes.start_soon(_pipe, client, upstream)
                pipes.start_soon(_pipe, upstream, client)


@dataclass
class Federated:
    gw: RunningGateway
    issuer: str
    """The provider's issuer (``http://127.0.0.1:<port>``)."""


def corp_idp(issuer: str, **changes: object) -> dict[str, object]:
    """The ``[[oauth.federation]]`` entry, as it would be in the TOML file."""
    return {
        "name": IDP,
        "display_name": "Corp SSO",
        "issuer": issuer,
        "client_id": CLIENT_ID,
        "client_secret": f"env:{SECRET_ENV}",  # a reference, resolved at startup
        "scopes": ["openid", "profile", "email", "groups"],
        "group_roles": {"analysts": ["analyst"]},
        "allow_insecure_http": True,  # the provider serves http on 127.0.0.1
        **changes,
    }


@contextlib.asynccontextmanager
async def federated_gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Federated]:
    monkeypatch.setenv(SECRET_ENV, CLIENT_SECRET)
    forwarder = Forwarder()
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener, anyio.create_task_group() as tg:
        port = listener.extra(SocketAttribute.local_port)  # noqa: S610 (anyio's typed attributes, not Django)
        public = f"https://127.0.0.1:{port}"
        # realidp registers (and stops its browser at) REDIRECT_URI: make it the gateway's derived callback.
        monkeypatch.setattr(realidp, "REDIRECT_URI", f"{public}/authorize/federated/{IDP}/callback")
        tg.start_soon(listener.serve, forwarder.handle)
        async with (
            running_provider() as issuer,
            serve_module("mcp_bastion.demo.customers", "--http", "--port", "0") as upstream_url,
            running_gateway(
                tmp_path,
                {"up": {"url": upstream_url, "allow_insecure_http": True, "scopes": SCOPES}},
                server={"public_url": public},
                oauth={"federation": [corp_idp(issuer)]},
            ) as gw,
        ):
            assert gw.base_url == public
            forwarder.target = gw.gateway.settings.server.port
            yield Federated(gw, issuer)
        tg.cancel_scope.cancel()


def sdk_auth(gw: RunningGateway, storage: Memory, consent_pages: list[str]) -> OAuthClientProvider:
    landed: list[AuthorizationCodeResult] = []

    async def at_the_idp(url: str) -> Mapping[str, str]:
        return await browse_to_callback(url, login="alice")

    async def user_at_the_browser(url: str) -> None:
        back = await sign_in_with(url, provider=IDP, at_provider=at_the_idp, ca=gw.client_ssl())
        assert back.consent_page is not None
        consent_pages.append(back.consent_page)
        params = back.params
        assert params.get("iss") == gw.base_url
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


async def test_sdk_client_signs_in_through_the_real_idp_and_calls_a_tool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage, consent_pages = Memory(), list[str]()
    async with federated_gateway(tmp_path, monkeypatch) as federated:
        gw = federated.gw
        async with httpx2.AsyncClient(verify=gw.client_ssl(), auth=sdk_auth(gw, storage, consent_pages)) as http:
            async with Client(streamable_http_client(gw.url("up"), http_client=http), mode="auto") as client:
                result = await client.call_tool("get_customer", {"customer_id": "C001"})
                assert not result.is_error
        records = gw.audit()
    assert storage.client is not None
    [consent] = consent_pages
    assert "alice (via Corp SSO)" in consent
    calls = [r for r in records if r["method"] == "tools/call"]
    assert calls
    for record in calls:
        principal = record["principal"]
        assert isinstance(principal, str)
        issuer, _, subject = principal.rpartition("#")
        assert issuer == federated.issuer
        assert len(subject) == 64  # the provider's pairwise subject, not the login name
        assert record["client"] == storage.client.client_id


async def test_callback_with_a_forged_state_cookie_is_refused_and_issues_no_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with federated_gateway(tmp_path, monkeypatch) as federated:
        gw = federated.gw
        url, _ = await authorize_url(gw, "http://127.0.0.1:33418/callback")
        async with httpx2.AsyncClient(verify=gw.client_ssl(), follow_redirects=False, timeout=30) as browser:
            pressed, fields = await press_sign_in_with(browser, url, IDP)
            params = await browse_to_callback(pressed.headers["location"], login="alice")
            genuine, nonce = browser.cookies[STATE_COOKIE], browser.cookies[BROWSER_COOKIE]
            # The attacker knows the state (it is in the URL) and makes the rest up, but not the page key.
            made_up = FederationState(
                issuer=federated.issuer,
                state=params["state"],
                nonce=secrets.token_urlsafe(32),
                code_verifier=secrets.token_urlsafe(32),
                pending_id=fields["pending"],
                expires_at=int(time.time()) + STATE_LIFETIME_SECONDS,
            )
            forged = StateCookies(Signer(secrets.token_bytes(32))).seal(IDP, nonce, made_up)
            callback = f"{gw.base_url}/authorize/federated/{IDP}/callback"
            browser.cookies.set(STATE_COOKIE, forged, domain="127.0.0.1", path=f"/authorize/federated/{IDP}/callback")
            refused = await browser.get(callback, params=params)

            assert (refused.status_code, reason(refused.text)) == (400, "federation_state_invalid")
            assert "location" not in refused.headers  # no code, no redirect to the client
            deleted = [c for c in refused.headers.get_list("set-cookie") if c.startswith(STATE_COOKIE)]
            assert len(deleted) == 1
            assert "max-age=0" in deleted[0].lower()

            # Refused before the IdP's code was spent: the genuine cookie still completes this very login.
            browser.cookies.set(STATE_COOKIE, genuine, domain="127.0.0.1", path=f"/authorize/federated/{IDP}/callback")
            honest = await browser.get(callback, params=params)
            assert honest.status_code == 303, honest.text[:500]
            assert honest.headers["location"].startswith("/authorize/consent?pending=")


async def test_an_unreachable_idp_does_not_stop_the_gateway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(SECRET_ENV, CLIENT_SECRET)
    with socket.socket() as sock:  # a port that was free a moment ago, and that nothing listens on
        sock.bind(("127.0.0.1", 0))
        issuer = f"http://127.0.0.1:{sock.getsockname()[1]}"
    caplog.set_level(logging.ERROR, logger="mcp_bastion.web")
    async with (
        serve_module("mcp_bastion.demo.customers", "--http", "--port", "0") as upstream_url,
        running_gateway(
            tmp_path,
            {"up": {"url": upstream_url, "allow_insecure_http": True, "scopes": SCOPES}},
            oauth={"federation": [corp_idp(issuer)]},
        ) as gw,
    ):
        url, _ = await authorize_url(gw, "http://127.0.0.1:33418/callback")
        async with httpx2.AsyncClient(verify=gw.client_ssl(), follow_redirects=False, timeout=30) as browser:
            page = await browser.get(url)
            assert page.status_code == 200
            assert "Corp SSO is temporarily unavailable." in page.text
            pressed = await browser.post(
                f"{gw.base_url}/authorize/federated/{IDP}", data=forms(page.text)[f"/authorize/federated/{IDP}"]
            )
    assert (pressed.status_code, reason(pressed.text)) == (503, "idp_not_discovered")
    assert any("idp_unreachable" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
