"""The pages in a real browser: Playwright driving Debian's Chromium against a real uvicorn on loopback.

The pages are served at ``http://127.0.0.1:<port>``; the fake client's redirect URI is
``http://localhost:<port>/callback`` on the same server but a *different origin*, so the final 303 after
the consent POST really crosses origins, as it does for a real client (browsers apply CSP ``form-action``
to that redirect). Cookies are the production ones (``Secure``, ``__Host-``): Chromium treats loopback as a
secure context.

The federated tests add a stand-in IdP on a third origin, ``http://idp.localhost:<port>/idp/…`` (Chromium
resolves ``*.localhost`` to loopback itself): the "Sign in with …" POST is answered by a 303 to it, and its
own form POST answers a 303 back to our callback, a cross-site top-level navigation (which is what the
SameSite=Lax state cookie must survive).

A screenshot of each page goes to ``artifacts/screenshots/`` for people to look at.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from urllib.parse import parse_qs, urlencode

import anyio
import pytest
import uvicorn
from playwright.async_api import Browser, Page, async_playwright
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from mcp_bastion.asgi.pages import page_routes, routes
from mcp_bastion.oauth.service import User
from tests.pages.fakes import (
    IDP_ISSUER,
    ISSUER,
    FakeClient,
    FakeDirectory,
    FakeFederatedLogin,
    FakeService,
    RecordingLimiter,
    fake_idp,
)
from tests.pages.harness import CLIENT_ID, PASSWORD, STATE, authorize_query

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.e2e,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is missing: run scripts/test-browsers"),
]


@dataclass
class Site:
    """The pages and a stand-in client callback, served by uvicorn on one loopback port."""

    port: int
    service: FakeService
    landed: list[dict[str, str]] = field(default_factory=list)
    idp: FakeFederatedLogin | None = None
    idp_visits: list[str] = field(default_factory=list)
    """The ``state`` of each visit to the stand-in IdP's login page."""

    @property
    def callback(self) -> str:
        return f"http://localhost:{self.port}/callback"

    def authorize_url(self, **overrides: str | None) -> str:
        query = authorize_query(**{"redirect_uri": self.callback, **overrides})
        return f"http://127.0.0.1:{self.port}/authorize?{urlencode(query)}"


def callback_page(site: Site) -> Route:
    async def callback(request: Request) -> Response:
        site.landed.append(dict(request.query_params))
        outcome = "denied" if "error" in request.query_params else "approved"
        items = "".join(
            f"<li><code>{escape(k)}</code> = <code>{escape(v[:40])}</code></li>"
            for k, v in request.query_params.items()
        )
        title = "Example client (test stand-in for the application's redirect URI)"
        return HTMLResponse(f"<!doctype html><title>{title}</title><h1>{title}: {outcome}</h1><ul>{items}</ul>")

    return Route("/callback", callback)


def idp_pages(site: Site) -> list[Route]:
    """A stand-in IdP: a login page with one button, whose POST redirects back to our callback."""

    async def authorize(request: Request) -> Response:
        state = request.query_params["state"]
        site.idp_visits.append(state)
        return HTMLResponse(
            "<!doctype html><title>Stand-in IdP</title><h1>Stand-in IdP</h1>"
            f'<form method="post" action="/idp/approve"><input type="hidden" name="state" value="{escape(state)}">'
            '<button type="submit">Continue as alice</button></form>'
        )

    async def approve(request: Request) -> Response:
        [state] = parse_qs((await request.body()).decode())["state"]
        query = urlencode({"state": state, "code": "idp-code", "iss": IDP_ISSUER})
        return RedirectResponse(f"http://127.0.0.1:{site.port}/authorize/federated/corp/callback?{query}", 303)

    return [Route("/idp/authorize", authorize), Route("/idp/approve", approve, methods=["POST"])]


@contextlib.asynccontextmanager
async def running_site(*, federated: bool = False) -> AsyncIterator[Site]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    service = FakeService(clock=time.time)
    site = Site(port, service)
    service.add_client(FakeClient(CLIENT_ID, "Claude Code", (site.callback,)))
    users = FakeDirectory()
    users.add(User(id="u-alice", username="alice"), PASSWORD)
    extra = [callback_page(site)]
    if federated:
        site.idp = fake_idp(time.time, authorization_endpoint=f"http://idp.localhost:{port}/idp/authorize")
        extra += idp_pages(site)
    federation = {"corp": site.idp} if site.idp is not None else None
    pages = page_routes(service, users, issuer=ISSUER, login_limiter=RecordingLimiter(), federation=federation)
    app = Starlette(routes=[*pages, *extra])
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        with anyio.fail_after(10):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        yield site
    finally:
        server.should_exit = True
        with anyio.fail_after(10):
            await task
        sock.close()


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    async with running_site() as running:
        yield running


@pytest.fixture
async def federated_site() -> AsyncIterator[Site]:
    async with running_site(federated=True) as running:
        yield running


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    async with async_playwright() as playwright:
        browser: Browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 760, "height": 720}, locale="en-US")
            context.set_default_timeout(10_000)
            yield await context.new_page()
        finally:
            await browser.close()


async def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


async def log_in(page: Page, site: Site, password: str = PASSWORD) -> int:
    """Open /authorize, fill the form, submit; the status of the page the browser lands on."""
    await page.goto(site.authorize_url())
    await page.fill("#username", "alice")
    await page.fill("#password", password)
    async with page.expect_navigation() as navigation:
        await page.click("button[type=submit]")
    response = await navigation.value
    assert response is not None
    return response.status


async def test_login_consent_approve_lands_on_the_client_with_code_and_state(site: Site, page: Page) -> None:
    await page.goto(site.authorize_url())
    assert await page.title() == "Sign in · mcp-bastion"
    await screenshot(page, "login")

    await page.fill("#username", "alice")
    await page.fill("#password", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/authorize/consent?**")
    assert "Claude Code" in await page.inner_text("h1")
    assert await page.inner_text("strong.host") == f"localhost:{site.port}"
    assert await page.locator("input[name=scope]").count() == 2  # files:read, files:write; not admin
    await screenshot(page, "consent")

    await page.uncheck("input[value='files:write']")
    await page.click("button[value=approve]")
    await page.wait_for_url(f"{site.callback}?**")
    await screenshot(page, "approved")

    assert site.landed == [{"code": "code-1", "state": STATE, "iss": ISSUER}]
    assert site.service.approvals[0].scopes == frozenset({"files:read"})


async def test_wrong_password_shows_the_generic_message(site: Site, page: Page) -> None:
    assert await log_in(page, site, password="not it") == 401
    assert await page.inner_text("[role=alert]") == "Wrong username or password."
    assert await page.input_value("#username") == "alice"
    await screenshot(page, "login-failed")
    # And the page still works: the right password gets through.
    await page.fill("#password", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/authorize/consent?**")


async def test_csrf_token_removed_before_submit_is_refused(site: Site, page: Page) -> None:
    await page.goto(site.authorize_url())
    await page.evaluate("document.querySelector('input[name=csrf]').remove()")
    await page.fill("#username", "alice")
    await page.fill("#password", PASSWORD)
    async with page.expect_navigation() as navigation:
        await page.click("button[type=submit]")
    response = await navigation.value
    assert response is not None
    assert response.status == 403
    assert await page.inner_text("code.reason") == "csrf_invalid"
    await screenshot(page, "error")
    assert site.service.approvals == []


async def test_consent_denied_lands_on_the_client_with_access_denied(site: Site, page: Page) -> None:
    assert await log_in(page, site) == 200
    await page.click("button[value=deny]")
    await page.wait_for_url(f"{site.callback}?**")
    await screenshot(page, "denied")
    assert site.landed == [{"error": "access_denied", "state": STATE, "iss": ISSUER}]
    assert site.service.approvals == []


async def test_invalid_request_is_an_error_page_in_the_browser(site: Site, page: Page) -> None:
    response = await page.goto(site.authorize_url(redirect_uri="https://evil.example/cb"))
    assert response is not None
    assert response.status == 400
    assert page.url.startswith(f"http://127.0.0.1:{site.port}/authorize?")
    await screenshot(page, "error-invalid-request")


async def test_page_has_no_csp_violations_and_loads_its_stylesheet(site: Site, page: Page) -> None:
    messages: list[str] = []
    page.on("console", lambda message: messages.append(message.text))
    await page.goto(site.authorize_url())
    color = await page.evaluate("getComputedStyle(document.querySelector('button.primary')).backgroundColor")
    assert color == "rgb(31, 79, 209)"  # bastion.css applied
    assert [m for m in messages if "Content Security Policy" in m] == []


async def test_sign_in_with_an_idp_on_another_site_and_back(federated_site: Site, page: Page) -> None:
    site = federated_site
    messages: list[str] = []
    page.on("console", lambda message: messages.append(message.text))
    await page.goto(site.authorize_url())
    await screenshot(page, "login-federated")
    await page.click("text=Sign in with Corp SSO")
    await page.wait_for_url(f"http://idp.localhost:{site.port}/idp/authorize?**")
    # Back from another site by a POST and a 303: the SameSite=Lax state cookie rides on that navigation.
    await page.click("text=Continue as alice")
    await page.wait_for_url("**/authorize/consent?**")
    assert "alice@corp (via Corp SSO)" in await page.inner_text("dl.facts")
    await screenshot(page, "consent-federated")
    await page.click("button[value=approve]")
    await page.wait_for_url(f"{site.callback}?**")

    assert site.idp is not None
    assert site.idp_visits == ["state-1"]
    assert site.idp.finished == [{"state": "state-1", "code": "idp-code", "iss": IDP_ISSUER}]
    [approval] = site.service.approvals
    assert approval.user.id == f"{IDP_ISSUER}#248289761001"
    # The state cookie is gone once the callback ran.
    assert [c for c in await page.context.cookies() if c["name"] == "__Secure-bastion-federation"] == []
    assert [m for m in messages if "Content Security Policy" in m] == []


async def test_chromium_applies_form_action_to_the_redirect_to_the_idp(
    federated_site: Site, page: Page, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why the login page lists each IdP's origin in ``form-action``: without it, Chromium blocks the 303
    that answers the "Sign in with …" POST, although the POST itself went to our own origin."""
    monkeypatch.setattr(routes, "form_sources", lambda logins: ())
    await page.goto(federated_site.authorize_url())
    async with page.expect_console_message(lambda m: "form-action" in m.text) as blocked:
        await page.click("text=Sign in with Corp SSO")
    assert "Content Security Policy" in (await blocked.value).text
    assert federated_site.idp is not None
    assert len(federated_site.idp.started) == 1  # our route answered the POST ...
    assert federated_site.idp_visits == []  # ... and the browser refused to follow its redirect
