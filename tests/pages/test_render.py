"""Every response's security headers, escaping of untrusted text, the stylesheet, and CSP form targets."""

from __future__ import annotations

from urllib.parse import urlencode

import httpx
import pytest

from mcp_bastion.asgi.pages.render import origin_source, redirect_sources
from tests.pages.fakes import FakeClient
from tests.pages.harness import PASSWORD, REDIRECT_URI, Harness, authorize_query, consent_form

pytestmark = pytest.mark.anyio

BASE_CSP = "default-src 'none'; style-src 'self'; form-action 'self'{extra}; frame-ancestors 'none'; base-uri 'none'"
REDIRECT_ORIGINS = " https://127.0.0.1:8765 http://127.0.0.1:8765"


def assert_secure_headers(response: httpx.Response, *, form_targets: str = "") -> None:
    headers = response.headers
    assert headers["content-security-policy"] == BASE_CSP.format(extra=form_targets), response.url
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["cache-control"] == "no-store"
    assert headers["x-content-type-options"] == "nosniff"


async def every_kind_of_response(harness: Harness) -> list[tuple[str, httpx.Response]]:
    """One of each response the pages give, in the order a user might meet them."""
    seen: list[tuple[str, httpx.Response]] = []
    async with harness.browser() as browser:
        login_page = await harness.open_login(browser)
        seen.append(("login", login_page))
        seen.append(("wrong-password", await harness.submit_login(browser, login_page, "alice", "nope")))
        login = await harness.submit_login(browser, login_page)
        seen.append(("login-redirect", login))
        page = await browser.get(login.headers["location"])
        seen.append(("consent", page))
        seen.append(
            ("approve-redirect", await browser.post("/authorize/consent", data=consent_form(page, "approve", [])))
        )
        seen.append(("csrf-refused", await browser.post("/authorize/login", data={"pending": "x"})))
        seen.append(("session-refused", await browser.get("/authorize/consent?pending=x")))
        seen.append(("bad-request", await browser.get("/authorize?client_id=nobody")))
        query = urlencode(authorize_query(code_challenge_method="plain"))
        seen.append(("error-redirect", await browser.get(f"/authorize?{query}")))
        seen.append(("method", await browser.get("/authorize/login")))
        seen.append(("stylesheet", await browser.get("/static/bastion.css")))
        harness.limiter.wait = 5
        seen.append(("rate-limited", await harness.submit_login(browser, await harness.open_login(browser))))
    return seen


async def test_every_response_carries_the_security_headers(harness: Harness) -> None:
    responses = await every_kind_of_response(harness)
    statuses = {name: response.status_code for name, response in responses}
    assert statuses == {
        "login": 200,
        "wrong-password": 401,
        "login-redirect": 303,
        "consent": 200,
        "approve-redirect": 303,
        "csrf-refused": 403,
        "session-refused": 403,
        "bad-request": 400,
        "error-redirect": 303,
        "method": 405,
        "stylesheet": 200,
        "rate-limited": 429,
    }
    for name, response in responses:
        # Pages whose form may end in a redirect to the client allow that origin as a form target.
        targets = REDIRECT_ORIGINS if name in {"login", "wrong-password", "consent"} else ""
        assert_secure_headers(response, form_targets=targets)


async def test_pages_are_html_and_the_stylesheet_is_css(harness: Harness) -> None:
    async with harness.browser() as browser:
        page = await harness.open_login(browser)
        css = await browser.get("/static/bastion.css")
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert '<link rel="stylesheet" href="/static/bastion.css">' in page.text
    assert css.headers["content-type"] == "text/css; charset=utf-8"
    assert b".card" in css.content
    assert b"<script" not in page.content  # no scripts anywhere, so CSP can forbid them outright


XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'


async def test_untrusted_text_renders_inert(harness: Harness) -> None:
    harness.service.add_client(FakeClient("evil", XSS, ("https://evil.example/cb",), kind="metadata"))
    harness.service.descriptions["files:read"] = XSS
    async with harness.browser() as browser:
        login_page = await harness.open_login(browser, client_id="evil", redirect_uri="https://evil.example/cb")
        wrong = await harness.submit_login(browser, login_page, f"{XSS}'\"", "nope")
        consent = await harness.consent_page(browser, client_id="evil", redirect_uri="https://evil.example/cb")
    escaped = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;"
    for response in (login_page, wrong, consent):
        assert "<script" not in response.text
        assert "<img" not in response.text
        assert escaped in response.text
    # The username echoed into an attribute cannot break out of it.
    assert 'value="&lt;script&gt;' in wrong.text
    assert "&#39;&#34;" in wrong.text


async def test_login_page_names_the_client(harness: Harness) -> None:
    async with harness.browser() as browser:
        page = await harness.open_login(browser)
    assert '<strong class="client">Claude Code</strong>' in page.text


async def test_consent_page_names_client_kind_redirect_host_and_user(harness: Harness) -> None:
    harness.service.add_client(
        FakeClient("https://app.example/client.json", "Example App", ("https://app.example:8443/cb",), "metadata")
    )
    async with harness.browser() as browser:
        page = await harness.consent_page(
            browser, client_id="https://app.example/client.json", redirect_uri="https://app.example:8443/cb"
        )
    assert '<strong class="host">app.example:8443</strong>' in page.text
    assert "published client metadata document" in page.text
    assert '<code class="wrap">https://app.example/client.json</code>' in page.text
    assert "alice" in page.text
    assert page.headers["content-security-policy"] == BASE_CSP.format(extra=" https://app.example:8443")


@pytest.mark.parametrize(
    ("host", "sources"),
    [
        pytest.param("app.example", ("https://app.example",), id="https"),
        pytest.param("app.example:8443", ("https://app.example:8443",), id="https-port"),
        pytest.param("127.0.0.1:8765", ("https://127.0.0.1:8765", "http://127.0.0.1:8765"), id="loopback-v4"),
        pytest.param("[::1]:9000", ("https://[::1]:9000", "http://[::1]:9000"), id="loopback-v6"),
        pytest.param("localhost:3000", ("https://localhost:3000", "http://localhost:3000"), id="localhost"),
        pytest.param("10.0.0.1", ("https://10.0.0.1",), id="private-is-not-loopback"),
        pytest.param("a.example; script-src *", (), id="injection"),
        pytest.param("*", (), id="wildcard"),
        pytest.param("", (), id="empty"),
        pytest.param("h\u00e9.example", (), id="non-ascii"),
        pytest.param("a.example\n", (), id="control"),
    ],
)
def test_redirect_sources(host: str, sources: tuple[str, ...]) -> None:
    assert redirect_sources(host) == sources


@pytest.mark.parametrize(
    ("url", "source"),
    [
        pytest.param("https://login.idp.example/authorize?x=1", "https://login.idp.example", id="https"),
        pytest.param("https://idp.example:8443/a", "https://idp.example:8443", id="port"),
        pytest.param("http://127.0.0.1:4000/auth", "http://127.0.0.1:4000", id="loopback-http"),
        pytest.param("https://[::1]:4000/auth", "https://[::1]:4000", id="ipv6"),
        pytest.param("javascript:alert(1)", None, id="javascript"),
        pytest.param("https://user@idp.example/", None, id="userinfo"),
        pytest.param("https://idp.example;script-src/", None, id="semicolon"),
        pytest.param("https://*.example/", None, id="wildcard"),
        pytest.param("https:///path", None, id="no-host"),
        pytest.param("https://[::1/", None, id="unparsable"),
    ],
)
def test_origin_source(url: str, source: str | None) -> None:
    assert origin_source(url) == source


async def test_password_is_never_echoed(harness: Harness) -> None:
    async with harness.browser() as browser:
        wrong = await harness.submit_login(browser, await harness.open_login(browser), "alice", "s3cret-guess")
    assert "s3cret-guess" not in wrong.text
    assert PASSWORD not in wrong.text
    assert REDIRECT_URI not in wrong.text  # the page shows the host only, never the full URI with its path
