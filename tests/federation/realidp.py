"""The real third-party OpenID Provider (npm oidc-provider, see provider/server.mjs) for the e2e tests: start it
on loopback, and act as the user's browser at its login and consent pages.

The provider is installed by ``scripts/oidc-provider-setup``; a test fails (does not skip) when it is missing,
like the conformance suite. Every wait is bounded; the child is terminated, then killed, on exit.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Final
from urllib.parse import parse_qsl, urljoin, urlsplit

import anyio
import httpx
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

ROOT: Final = Path(__file__).resolve().parents[2]
SERVER: Final = Path(__file__).resolve().parent / "provider" / "server.mjs"
PACKAGE: Final = ROOT / ".cache" / "oidc-provider" / "node_modules" / "oidc-provider" / "package.json"
READY_TIMEOUT: Final = 30.0
STOP_TIMEOUT: Final = 5.0
MAX_STEPS: Final = 10
"""Most pages and redirects between the authorization request and our callback (login, consent, resumes)."""

CLIENT_ID: Final = "bastion-gateway"
CLIENT_SECRET: Final = "federation-test-secret"
REDIRECT_URI: Final = "http://127.0.0.1:9/login/federated/callback"
"""Never contacted: the browser stops at the redirect to it, as a real one would hand it to the gateway."""


@asynccontextmanager
async def running_provider(
    *,
    client_secret: str | None = CLIENT_SECRET,
    alg: str = "ES256",
    claims_in_id_token: bool = False,
    redirect_uri: str | None = None,
    registration: bool = False,
) -> AsyncIterator[str]:
    """Start the provider on a free loopback port; yield its issuer URL."""
    node = shutil.which("node")
    if node is None or not PACKAGE.is_file():
        pytest.fail("the real OpenID Provider is not installed: run scripts/oidc-provider-setup (needs node and npm)")
    env = {
        **os.environ,
        "OIDC_CLIENT_ID": CLIENT_ID,
        "OIDC_CLIENT_SECRET": client_secret or "",
        # Read at call time: tests point the module's REDIRECT_URI at their gateway (monkeypatch).
        "OIDC_REDIRECT_URIS": redirect_uri or REDIRECT_URI,
        "OIDC_ID_TOKEN_ALG": alg,
        "OIDC_CLAIMS_IN_ID_TOKEN": "1" if claims_in_id_token else "0",
        "OIDC_REGISTRATION": "1" if registration else "0",
    }
    process = await anyio.open_process([node, str(SERVER), "0"], stdin=subprocess.DEVNULL, stderr=None, env=env)
    try:
        assert process.stdout is not None
        stdout = BufferedByteReceiveStream(process.stdout)
        with anyio.fail_after(READY_TIMEOUT):
            while True:
                try:
                    line = (await stdout.receive_until(b"\n", 64 * 1024)).decode().strip()
                except (anyio.IncompleteRead, anyio.EndOfStream):
                    raise RuntimeError(f"oidc-provider exited with {await process.wait()} before READY") from None
                if line.startswith("READY "):
                    break
        yield line.removeprefix("READY ")
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.terminate()
                with anyio.move_on_after(STOP_TIMEOUT):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
            await process.aclose()


@dataclass
class Form:
    action: str = ""
    fields: dict[str, str] = field(default_factory=dict)


class Page(HTMLParser):
    """The first form on a page (its action and inputs) and every link."""

    def __init__(self) -> None:
        super().__init__()
        self.form: Form | None = None
        self.links: list[str] = []
        self._in_form = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "form" and self.form is None:
            self.form, self._in_form = Form(action=values.get("action", "")), True
        elif tag == "input" and self._in_form and self.form is not None and "name" in values:
            self.form.fields[values["name"]] = values.get("value", "")
        elif tag == "a" and "href" in values:
            self.links.append(values["href"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False


def _callback(response: httpx.Response) -> dict[str, str] | None:
    location = urljoin(str(response.url), response.headers["location"])
    if location.startswith(REDIRECT_URI):
        return dict(parse_qsl(urlsplit(location).query, keep_blank_values=True))
    return None


async def browse_to_callback(
    authorization_url: str, *, login: str, abort: bool = False, fields: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Be the user's browser: follow the IdP's redirects, sign in as ``login`` on its form (any password),
    confirm consent, and return the query of the redirect to our callback (which is not followed).
    With ``abort``, cancel at the login page instead (the IdP then redirects with ``error=access_denied``)."""
    async with httpx.AsyncClient(follow_redirects=False, trust_env=False, timeout=10.0) as browser:
        response = await browser.get(authorization_url)
        for _ in range(MAX_STEPS):
            if response.is_redirect:
                params = _callback(response)
                if params is not None:
                    return params
                response = await browser.get(urljoin(str(response.url), response.headers["location"]))
                continue
            assert response.status_code == 200, (response.status_code, response.text[:500])
            page = Page()
            page.feed(response.text)
            if abort:
                link = next(link for link in page.links if link.endswith("/abort"))
                response = await browser.get(urljoin(str(response.url), link))
                continue
            assert page.form is not None, response.text[:500]
            data = dict(page.form.fields)
            if data.get("prompt") == "login":
                data.update({"login": login, "password": "any password works here"})
            data.update(fields or {})
            response = await browser.post(urljoin(str(response.url), page.form.action), data=data)
    raise AssertionError(f"no redirect to {REDIRECT_URI} within {MAX_STEPS} steps")
