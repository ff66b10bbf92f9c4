"""End to end: an upstream guarded by a real third-party authorization server (npm ``oidc-provider``), the
gateway as its OAuth client, each user linking their upstream account once through a URL their MCP client
was given (MCP URL elicitation, -32042).

The recording upstream shows which token arrives for which user; the account-linking defences are tried:
a link signed in as another gateway user, and a callback finished in a browser that did not start the
flow, must both fail and store nothing.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urljoin

import httpx2
import pytest

from mcp_bastion.delegation.oauthlink import CALLBACK_PATH
from tests.e2e.gateway import RunningGateway, running_gateway
from tests.e2e.test_refusals import MODERN_HEADERS, call
from tests.federation.realidp import CLIENT_ID, CLIENT_SECRET, Page, running_provider
from tests.helpers.recording import Recorder, recording_upstream

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

PASSWORD = "correct horse battery staple"
MAX_STEPS = 12


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(params=["registered", "dynamic"])
async def setup(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[tuple[RunningGateway, Recorder]]:
    """The gateway as a client the operator registered at the upstream's AS, or one it registers itself."""
    port = free_port()
    callback = f"https://127.0.0.1:{port}{CALLBACK_PATH}"
    dynamic = request.param == "dynamic"
    provider = running_provider(redirect_uri=callback, registration=dynamic)
    async with recording_upstream() as recorder, provider as issuer:
        # No issuer configured: the gateway finds it in the upstream's RFC 9728 metadata.
        recorder.authorization_server = issuer
        # The upstream accepts only tokens its authorization server vouches for (OIDC UserInfo).
        recorder.userinfo = f"{issuer}/me"
        auth: dict[str, object] = {"mode": "oauth", "scopes": ["openid"], "allow_insecure_http": True}
        if not dynamic:
            auth.update({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})
        upstream = {"crm": {"url": recorder.url, "allow_insecure_http": True, "auth": auth}}
        async with running_gateway(tmp_path, upstream, port=port) as gw:
            authorization = gw.gateway.authorization
            assert authorization is not None
            for name in ("alice", "bob"):
                await authorization.users.add(name, PASSWORD, ["staff"])
            yield gw, recorder


async def token_for(gw: RunningGateway, name: str) -> str:
    authorization = gw.gateway.authorization
    assert authorization is not None
    info = await authorization.users.find(name)
    assert info is not None
    return gw.token(info.id, server="crm")


async def whoami(gw: RunningGateway, token: str) -> dict[str, object]:
    async with gw.http(token) as http:
        response = await http.post(
            gw.url("crm"), json=call("whoami", {}), headers={**MODERN_HEADERS, "mcp-name": "whoami"}
        )
    assert response.status_code == 200, response.text
    answer: dict[str, object] = response.json()
    return answer


def link_of(answer: dict[str, object]) -> str:
    error = answer["error"]
    assert isinstance(error, dict)
    assert error["code"] == -32042, error
    elicitation = error["data"]["elicitations"][0]
    assert elicitation["mode"] == "url"
    return str(elicitation["url"])


async def sign_in_at_gateway(browser: httpx2.AsyncClient, link: str, username: str) -> httpx2.Response:
    page = Page()
    page.feed((await browser.get(link)).text)
    assert page.form is not None
    data = {**page.form.fields, "username": username, "password": PASSWORD}
    return await browser.post(urljoin(link, page.form.action), data=data)


async def through_the_idp(browser: httpx2.AsyncClient, response: httpx2.Response, login: str) -> str:
    """Be the browser at the upstream's authorization server until it redirects to our callback."""
    for _ in range(MAX_STEPS):
        if response.is_redirect:
            location = urljoin(str(response.url), response.headers["location"])
            if CALLBACK_PATH in location:
                return location
            response = await browser.get(location)
            continue
        assert response.status_code == 200, (response.status_code, response.text[:500])
        page = Page()
        page.feed(response.text)
        assert page.form is not None, response.text[:500]
        data = dict(page.form.fields)
        if data.get("prompt") == "login":
            data.update({"login": login, "password": "any"})
        response = await browser.post(urljoin(str(response.url), page.form.action), data=data)
    raise AssertionError("no redirect to the gateway's callback")


async def test_each_user_links_once_and_calls_with_their_own_upstream_token(
    setup: tuple[RunningGateway, Recorder],
) -> None:
    gw, recorder = setup
    sent = {}
    for name in ("alice", "bob"):
        token = await token_for(gw, name)
        before = len(recorder.requests)
        link = link_of(await whoami(gw, token))
        assert len(recorder.requests) == before  # nothing goes upstream before the user linked
        async with httpx2.AsyncClient(verify=gw.client_ssl(), timeout=15, follow_redirects=False) as browser:
            to_idp = await sign_in_at_gateway(browser, link, name)
            assert to_idp.status_code == 303, to_idp.text[:500]
            callback = await through_the_idp(browser, to_idp, name)
            done = await browser.get(callback)
            assert done.status_code == 200, done.text[:500]
            assert "is linked" in done.text
        answer = await whoami(gw, token)
        text = answer["result"]["content"][0]["text"]  # type: ignore[index]
        assert text.startswith("sub=")  # the upstream verified the token with its AS and knows the user
        sent[name] = text
    # What reached the upstream: the AS's tokens, never the gateway tokens of the users.
    for headers in recorder.requests:
        assert not headers.get("authorization", "").startswith("Bearer ey")
    assert sent["alice"] != sent["bob"]
    # The same link cannot be used twice, and the next calls need no new consent.
    again = await whoami(gw, await token_for(gw, "alice"))
    assert again["result"]["content"][0]["text"] == sent["alice"]  # type: ignore[index]


async def test_a_link_is_for_its_own_user_only(setup: tuple[RunningGateway, Recorder]) -> None:
    gw, _ = setup
    link = link_of(await whoami(gw, await token_for(gw, "alice")))
    async with httpx2.AsyncClient(verify=gw.client_ssl(), timeout=15, follow_redirects=False) as browser:
        refused = await sign_in_at_gateway(browser, link, "bob")  # bob knows his own password, not alice's
    assert refused.status_code == 403
    assert "another account" in refused.text


async def test_a_callback_in_another_browser_links_nothing(setup: tuple[RunningGateway, Recorder]) -> None:
    gw, recorder = setup
    token = await token_for(gw, "alice")
    link = link_of(await whoami(gw, token))
    async with httpx2.AsyncClient(verify=gw.client_ssl(), timeout=15, follow_redirects=False) as attacker:
        to_idp = await sign_in_at_gateway(attacker, link, "alice")
        callback = await through_the_idp(attacker, to_idp, "alice")
    # The victim's browser (no cookie from the sign-in) is made to open the callback: refused.
    async with httpx2.AsyncClient(verify=gw.client_ssl(), timeout=15, follow_redirects=False) as victim:
        refused = await victim.get(callback)
    assert refused.status_code == 403
    assert "link_other_browser" in refused.text
    still = await whoami(gw, token)
    link_of(still)  # nothing was stored: consent is still required
    assert all("authorization" not in r for r in recorder.requests)
