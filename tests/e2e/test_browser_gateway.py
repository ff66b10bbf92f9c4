"""A person in Chromium at the REAL gateway's login and consent pages (real authorization server, SQLite,
argon2id user), ending at a real client callback server; screenshots kept in ``artifacts/screenshots/``."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import anyio
import httpx2
import pytest
from playwright.async_api import async_playwright

from tests.e2e.gateway import RunningGateway, running_gateway
from tests.helpers.procs import serve_module
from tests.pages.test_browser import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.e2e,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is missing: run scripts/test-browsers"),
]

PASSWORD = "correct horse battery staple"


@contextlib.asynccontextmanager
async def callback_server() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """The client's redirect URI: records the query of every request it gets."""
    landed: list[dict[str, str]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            head = await reader.readuntil(b"\r\n\r\n")
            target = head.split(b" ", 2)[1].decode()
            if urlsplit(target).path == "/callback":  # not the browser's favicon request
                landed.append({k: v[0] for k, v in parse_qs(urlsplit(target).query).items()})
            body = b"<html><body><h1>Back at the client</h1></body></html>"
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/callback", landed
    finally:
        server.close()
        await server.wait_closed()


async def authorize_url(gw: RunningGateway, redirect: str, deny: bool = False) -> tuple[str, str]:
    async with httpx2.AsyncClient(verify=gw.client_ssl()) as http:
        registered = await http.post(
            f"{gw.base_url}/oauth/register",
            json={
                "client_name": "Browser Test Agent",
                "redirect_uris": [redirect],
                "token_endpoint_auth_method": "none",
            },
        )
    assert registered.status_code == 201, registered.text
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = {
        "response_type": "code",
        "client_id": registered.json()["client_id"],
        "redirect_uri": redirect,
        "state": "browser-state",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "resource": gw.url("up"),
        "scope": "customers.read",
    }
    return f"{gw.base_url}/authorize?{urlencode(query)}", verifier


@pytest.mark.parametrize("approve", [True, False], ids=["approve", "deny"])
async def test_login_and_consent_in_chromium(tmp_path: Path, approve: bool) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    async with serve_module("mcp_bastion.demo.customers", "--http", "--port", "0") as upstream_url:
        upstream = {"url": upstream_url, "allow_insecure_http": True, "scopes": {"customers.read": "Read customers"}}
        async with running_gateway(tmp_path, {"up": upstream}) as gw, callback_server() as (redirect, landed):
            authorization = gw.gateway.authorization
            assert authorization is not None
            await authorization.users.add("alice", PASSWORD, ["analyst"])
            url, _ = await authorize_url(gw, redirect)
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
                # The gateway's certificate comes from its own local CA; TLS itself is tested elsewhere.
                context = await browser.new_context(ignore_https_errors=True)
                page = await context.new_page()
                with anyio.fail_after(60):
                    await page.goto(url)
                    await page.fill("#username", "alice")
                    await page.fill("#password", "wrong password!!")
                    await page.click("button[type=submit]")
                    await page.wait_for_selector("text=wrong username or password", state="attached")
                    await page.fill("#password", PASSWORD)
                    await page.click("button[type=submit]")
                    await page.wait_for_selector("text=Browser Test Agent")
                    await page.screenshot(path=str(SCREENSHOTS / "gateway-consent.png"), full_page=True)
                    await page.click(f"button[value={'approve' if approve else 'deny'}]")
                    await page.wait_for_url(f"{redirect}*")
                await browser.close()
    assert len(landed) == 1
    answer = landed[0]
    assert answer["state"] == "browser-state"
    assert answer["iss"] == gw.base_url
    if approve:
        assert "code" in answer
    else:
        assert answer["error"] == "access_denied"
        assert "code" not in answer
