"""The pages mounted in a Starlette app over the fakes, and browsers (httpx clients) to drive them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
from starlette.applications import Starlette

from mcp_bastion.asgi.pages import page_routes
from mcp_bastion.oauth.service import User
from tests.oauth.support import FakeClock
from tests.pages.fakes import (
    ISSUER,
    RESOURCE,
    FakeClient,
    FakeDirectory,
    FakeFederatedLogin,
    FakeService,
    RecordingLimiter,
    fake_idp,
    hidden,
)

NOW = 1_800_000_000.0
CLIENT_ID = "client-1"
REDIRECT_URI = "http://127.0.0.1:8765/callback"
STATE = "state-xyz"
PASSWORD = "correct horse battery staple"
ADDRESS = "203.0.113.7"


def authorize_query(**overrides: str | None) -> dict[str, str]:
    query: dict[str, str | None] = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "state": STATE,
        "scope": "files:read files:write admin",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method": "S256",
        "resource": RESOURCE,
    }
    query.update(overrides)
    return {key: value for key, value in query.items() if value is not None}


@dataclass
class Harness:
    clock: FakeClock = field(default_factory=lambda: FakeClock(NOW))
    users: FakeDirectory = field(default_factory=FakeDirectory)
    limiter: RecordingLimiter = field(default_factory=RecordingLimiter)
    federation: dict[str, FakeFederatedLogin] = field(default_factory=dict)
    """External IdPs by name; build them with ``fakes.fake_idp(harness.clock)``."""
    secure_cookies: bool = True
    service: FakeService = field(init=False)
    app: Starlette = field(init=False)
    alice: User = field(init=False)

    def __post_init__(self) -> None:
        self.service = FakeService(clock=self.clock)
        self.service.add_client(FakeClient(CLIENT_ID, "Claude Code", (REDIRECT_URI,)))
        self.alice = self.users.add(User(id="u-alice", username="alice"), PASSWORD)
        self.users.add(User(id="u-root", username="root", roles=frozenset({"admin"})), PASSWORD)
        self.app = self.build_app()

    def add_idp(self, name: str = "corp", **options: Any) -> FakeFederatedLogin:
        """Configure an external IdP (``fakes.fake_idp`` options) and rebuild the app with it."""
        login = fake_idp(self.clock, **options)
        self.federation[name] = login
        self.app = self.build_app()
        return login

    def build_app(self, federation: Mapping[str, FakeFederatedLogin] | None = None) -> Starlette:
        """The pages over this harness's fakes (the same session key every time, as replicas share one)."""
        routes = page_routes(
            self.service,
            self.users,
            issuer=ISSUER,
            secure_cookies=self.secure_cookies,
            login_limiter=self.limiter,
            session_key=b"k" * 32,
            clock=self.clock,
            federation=self.federation if federation is None else federation,
        )
        return Starlette(routes=routes)

    def browser(self) -> httpx.AsyncClient:
        """A fresh browser: its own cookie jar, no redirects followed (tests look at each hop)."""
        transport = httpx.ASGITransport(app=self.app, client=(ADDRESS, 50123))
        return httpx.AsyncClient(transport=transport, base_url=ISSUER, follow_redirects=False)

    async def open_login(self, browser: httpx.AsyncClient, **overrides: str | None) -> httpx.Response:
        response = await browser.get(f"/authorize?{urlencode(authorize_query(**overrides))}")
        assert response.status_code == 200, response.text
        return response

    async def submit_login(
        self, browser: httpx.AsyncClient, login_page: httpx.Response, username: str = "alice", password: str = PASSWORD
    ) -> httpx.Response:
        fields = {**hidden(login_page.text), "username": username, "password": password}
        return await browser.post("/authorize/login", data=fields)

    async def consent_page(
        self, browser: httpx.AsyncClient, username: str = "alice", **overrides: str | None
    ) -> httpx.Response:
        """Log in through the real pages and follow to the consent page."""
        login = await self.submit_login(browser, await self.open_login(browser, **overrides), username)
        assert login.status_code == 303, login.text
        page = await browser.get(login.headers["location"])
        assert page.status_code == 200, page.text
        return page


def consent_form(page: httpx.Response, action: str, scopes: list[str]) -> dict[str, str | list[str]]:
    """The consent page's form as a browser would submit it with ``scopes`` ticked and ``action`` pressed."""
    fields: Mapping[str, str] = hidden(page.text)
    return {**fields, "action": action, "scope": scopes}
