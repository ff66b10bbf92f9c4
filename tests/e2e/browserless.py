"""A user at the login and consent pages, without a browser: follows the authorization URL, fills the real
forms (hidden CSRF and pending fields included) and returns where the pages finally redirect.

``log_in_and_consent`` signs in with a local password; ``sign_in_with`` presses "Sign in with <IdP>" and
leaves the IdP's own pages to a callable (``tests/federation/realidp.browse_to_callback`` for the real one).

The real-browser version of the same journey is ``tests/pages/test_browser.py`` (Playwright + Chromium).
"""

from __future__ import annotations

import html
import re
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx2

FORM = re.compile(r'<form method="post" action="([^"]+)">(.*?)</form>', re.S)
HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


@dataclass
class Redirected:
    location: str
    consent_page: str | None = None
    """The consent page's HTML, when the journey went through it."""

    @property
    def params(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.location).query).items()}


def _form(page: str) -> tuple[str, dict[str, str]]:
    match = FORM.search(page)
    assert match, page[:2000]
    fields = {html.unescape(k): html.unescape(v) for k, v in HIDDEN.findall(match.group(2))}
    return html.unescape(match.group(1)), fields


def forms(page: str) -> dict[str, dict[str, str]]:
    """Every form of a page: its action -> its hidden fields."""
    return {
        html.unescape(action): {html.unescape(k): html.unescape(v) for k, v in HIDDEN.findall(body)}
        for action, body in FORM.findall(page)
    }


async def _consent(
    http: httpx2.AsyncClient, authorization_url: str, signed_in: httpx2.Response, approve: bool
) -> Redirected:
    """From the 303 that ends a successful login: to the consent page and through it (or, on remembered
    consent, straight back to the client)."""
    assert signed_in.status_code == 303, signed_in.text[:2000]
    location = urljoin(authorization_url, signed_in.headers["location"])
    if not location.startswith(authorization_url.split("/authorize")[0]):
        return Redirected(location)  # consent remembered: straight back to the client
    consent = await http.get(location)
    assert consent.status_code == 200, consent.text[:2000]
    action, fields = _form(consent.text)
    scopes = re.findall(r'name="scope" value="([^"]+)" checked', consent.text)
    data: list[tuple[str, str]] = [*fields.items(), ("action", "approve" if approve else "deny")]
    data += [("scope", html.unescape(s)) for s in scopes]
    form = {"content-type": "application/x-www-form-urlencoded"}
    answer = await http.post(urljoin(location, action), content=urlencode(data), headers=form)
    assert answer.status_code == 303, answer.text[:2000]
    return Redirected(answer.headers["location"], consent.text)


async def log_in_and_consent(
    authorization_url: str,
    *,
    username: str,
    password: str,
    ca: ssl.SSLContext,
    approve: bool = True,
    browser: httpx2.AsyncClient | None = None,
) -> Redirected:
    """Walk the pages like a person would; returns the final redirect to the client."""
    own = browser is None
    http = browser or httpx2.AsyncClient(verify=ca, follow_redirects=False, timeout=30)
    try:
        page = await http.get(authorization_url)
        if page.status_code == 303:  # refused with a redirect back to the client
            return Redirected(page.headers["location"])
        assert page.status_code == 200, (page.status_code, page.headers.get("location"), page.text[:2000])
        action, fields = _form(page.text)
        login = await http.post(
            urljoin(authorization_url, action), data={**fields, "username": username, "password": password}
        )
        return await _consent(http, authorization_url, login, approve)
    finally:
        if own:
            await http.aclose()


AtProvider = Callable[[str], Awaitable[Mapping[str, str]]]
"""The user at the IdP: given its authorization URL, returns the query of its redirect to our callback."""


async def press_sign_in_with(
    http: httpx2.AsyncClient, authorization_url: str, provider: str
) -> tuple[httpx2.Response, dict[str, str]]:
    """Open the login page and press "Sign in with …" for ``provider``: the 303 to the IdP, and the form's
    hidden fields (``pending``, ``csrf``)."""
    page = await http.get(authorization_url)
    assert page.status_code == 200, (page.status_code, page.headers.get("location"), page.text[:2000])
    action = f"/authorize/federated/{provider}"
    fields = forms(page.text)[action]
    pressed = await http.post(urljoin(authorization_url, action), data=fields)
    assert pressed.status_code == 303, pressed.text[:2000]
    return pressed, fields


async def sign_in_with(
    authorization_url: str,
    *,
    provider: str,
    at_provider: AtProvider,
    ca: ssl.SSLContext,
    approve: bool = True,
    browser: httpx2.AsyncClient | None = None,
) -> Redirected:
    """Like ``log_in_and_consent``, through the external IdP named ``provider`` instead of a password."""
    own = browser is None
    http = browser or httpx2.AsyncClient(verify=ca, follow_redirects=False, timeout=30)
    try:
        pressed, _ = await press_sign_in_with(http, authorization_url, provider)
        params = await at_provider(pressed.headers["location"])
        callback = urljoin(authorization_url, f"/authorize/federated/{provider}/callback")
        back = await http.get(callback, params=dict(params))
        return await _consent(http, authorization_url, back, approve)
    finally:
        if own:
            await http.aclose()
