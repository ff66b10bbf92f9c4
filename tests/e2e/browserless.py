"""A user at the login and consent pages, without a browser: follows the authorization URL, fills the real
forms (hidden CSRF and pending fields included) and returns where the pages finally redirect.

The real-browser version of the same journey is ``tests/pages/test_browser.py`` (Playwright + Chromium).
"""

from __future__ import annotations

import html
import re
import ssl
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx2

FORM = re.compile(r'<form method="post" action="([^"]+)">(.*?)</form>', re.S)
HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


@dataclass
class Redirected:
    location: str

    @property
    def params(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.location).query).items()}


def _form(page: str) -> tuple[str, dict[str, str]]:
    match = FORM.search(page)
    assert match, page[:2000]
    fields = {html.unescape(k): html.unescape(v) for k, v in HIDDEN.findall(match.group(2))}
    return html.unescape(match.group(1)), fields


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
        assert page.status_code == 200, page.text[:2000]
        action, fields = _form(page.text)
        login = await http.post(
            urljoin(authorization_url, action), data={**fields, "username": username, "password": password}
        )
        assert login.status_code == 303, login.text[:2000]
        location = urljoin(authorization_url, login.headers["location"])
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
        return Redirected(answer.headers["location"])
    finally:
        if own:
            await http.aclose()
