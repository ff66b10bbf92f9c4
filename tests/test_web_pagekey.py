"""``web.build_authorization``: replicas sharing a database, not a state directory, sign the login pages with
one key, so a login form served by one replica is accepted by another; a legacy key file is imported."""

from __future__ import annotations

import base64
import hashlib
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import httpx2
import pytest

from mcp_bastion.settings import Settings, parse_settings
from mcp_bastion.storage.db import Database
from mcp_bastion.storage.pagekeys import load_page_key
from mcp_bastion.vault.keyfile import DEFAULT_FILENAME
from mcp_bastion.web import PAGE_KEY_FILE, Authorization, build_authorization, open_vault
from tests.e2e.browserless import forms

pytestmark = pytest.mark.anyio

BASE = "https://127.0.0.1:9443"
RESOURCE = f"{BASE}/mcp/up"
REDIRECT = "http://127.0.0.1:9/callback"
PASSWORD = "correct horse battery staple"


def settings_for(state: Path, database: Path) -> Settings:
    return parse_settings(
        {
            "server": {"host": "127.0.0.1", "port": 9443, "state_dir": str(state)},
            "storage": {"url": f"sqlite+aiosqlite:///{database}"},
            "upstreams": {
                "up": {"url": "http://127.0.0.1:9/mcp", "allow_insecure_http": True, "scopes": {"r": "Read"}}
            },
        }
    )


@pytest.fixture
async def replicas(tmp_path: Path) -> AsyncIterator[tuple[Authorization, Authorization]]:
    """Two gateways over one database, each with its own state directory holding the same vault key."""
    database = tmp_path / "shared.db"
    a = build_authorization(settings_for(tmp_path / "a", database), {"up": RESOURCE}, secure=True)
    await a.startup()
    (tmp_path / "b").mkdir(mode=0o700)
    shutil.copy2(tmp_path / "a" / DEFAULT_FILENAME, tmp_path / "b" / DEFAULT_FILENAME)
    b = build_authorization(settings_for(tmp_path / "b", database), {"up": RESOURCE}, secure=True)
    await b.startup()
    try:
        yield a, b
    finally:
        await a.shutdown()
        await b.shutdown()


def client(authorization: Authorization, cookies: httpx2.Cookies | None = None) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=authorization.app), base_url=BASE, cookies=cookies)


async def test_a_login_page_of_one_replica_is_accepted_by_another(
    replicas: tuple[Authorization, Authorization],
) -> None:
    a, b = replicas
    await a.users.add("alice", PASSWORD, ["analyst"])
    async with client(a) as on_a:
        registered = await on_a.post(
            "/oauth/register", json={"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}
        )
        assert registered.status_code == 201, registered.text
        challenge = base64.urlsafe_b64encode(hashlib.sha256(secrets.token_bytes(32)).digest()).rstrip(b"=")
        query = {
            "response_type": "code",
            "client_id": registered.json()["client_id"],
            "redirect_uri": REDIRECT,
            "state": "s",
            "code_challenge": challenge.decode(),
            "code_challenge_method": "S256",
            "resource": RESOURCE,
            "scope": "r",
        }
        page = await on_a.get(f"/authorize?{urlencode(query)}")
        assert page.status_code == 200, page.text[:2000]
        [(action, fields)] = forms(page.text).items()
        cookies = on_a.cookies
    async with client(b, cookies) as on_b:
        login = await on_b.post(action, data={**fields, "username": "alice", "password": PASSWORD})
    assert login.status_code == 303, login.text[:2000]


async def test_the_legacy_key_file_is_imported_at_startup(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    old = secrets.token_bytes(32)
    (state / PAGE_KEY_FILE).write_bytes(old)
    (state / PAGE_KEY_FILE).chmod(0o600)
    settings = settings_for(state, tmp_path / "bastion.db")
    authorization = build_authorization(settings, {"up": RESOURCE}, secure=True)
    await authorization.startup()
    try:
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'bastion.db'}")
        try:
            assert await load_page_key(db, open_vault(settings)) == old
        finally:
            await db.aclose()
    finally:
        await authorization.shutdown()
