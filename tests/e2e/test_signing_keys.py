"""End to end: the running gateway signs with the database key ring and follows rotations made elsewhere.

Another process (here: a second key ring on the same database, as ``mcp-bastion keys rotate`` builds it)
rotates the keys; the gateway keeps accepting tokens of the retired key, accepts tokens of the new key at
once (an unknown ``kid`` makes it re-read the table), publishes both in its JWKS, and after a
``--revoke-previous`` rotation refuses the old key's tokens. A gateway whose vault cannot open the stored
keys refuses to start.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import orjson
import pytest

from mcp_bastion.app import build_gateway
from mcp_bastion.errors import ConfigError
from mcp_bastion.settings import parse_settings
from mcp_bastion.storage.db import default_url, open_database
from mcp_bastion.vault.keyfile import DEFAULT_FILENAME
from mcp_bastion.web import key_ring, open_vault
from tests.e2e.gateway import RunningGateway, running_gateway
from tests.e2e.test_refusals import MODERN_HEADERS, call
from tests.helpers.procs import serve_module

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    async with serve_module("mcp_bastion.demo.customers", "--http", "--port", "0") as upstream_url:
        async with running_gateway(tmp_path, {"up": {"url": upstream_url, "allow_insecure_http": True}}) as g:
            yield g


def kid_of(token: str) -> str:
    segment = token.split(".")[0]
    return str(orjson.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))["kid"])


async def status_of(gw: RunningGateway, token: str) -> tuple[int, str]:
    async with gw.http(token) as http:
        response = await http.post(gw.url("up"), json=call(), headers=MODERN_HEADERS)
    reason = response.json()["error"]["data"]["reason"] if response.status_code != 200 else ""
    return response.status_code, reason


async def published_kids(gw: RunningGateway) -> set[str]:
    async with gw.http() as http:
        document = (await http.get(f"{gw.base_url}/oauth/jwks.json")).json()
    assert all(set(key) == {"kty", "crv", "x", "y", "kid", "alg", "use"} for key in document["keys"])  # no "d"
    return {key["kid"] for key in document["keys"]}


async def test_rotation_elsewhere_is_followed(gw: RunningGateway) -> None:
    settings = gw.gateway.settings
    old = gw.token()
    assert await published_kids(gw) == {kid_of(old)}
    async with open_database(default_url(settings)) as db:
        other = key_ring(db, open_vault(settings), settings)
        await other.load()
        new_kid = await other.rotate()
        new = other.mint("alice", gw.url("up"), client_id="cli")
    assert kid_of(new) == new_kid != kid_of(old)
    assert await status_of(gw, new) == (200, "")  # unknown kid: the gateway re-reads the table
    assert await status_of(gw, old) == (200, "")  # retired, still published until its tokens expire
    assert await published_kids(gw) == {kid_of(old), new_kid}
    assert kid_of(gw.token()) == new_kid  # and the gateway itself now signs with the new key


async def test_a_leaked_key_is_revoked_everywhere(gw: RunningGateway) -> None:
    settings = gw.gateway.settings
    leaked = gw.token()
    async with open_database(default_url(settings)) as db:
        other = key_ring(db, open_vault(settings), settings)
        await other.load()
        await other.rotate(revoke_previous=True)
    authorization = gw.gateway.authorization
    assert authorization is not None
    await authorization.keys.refresh()  # what maintain() does every refresh interval
    assert await status_of(gw, leaked) == (401, "token_key_unknown")
    assert kid_of(leaked) not in await published_kids(gw)
    assert await status_of(gw, gw.token()) == (200, "")
    record = gw.audit()[-2]
    assert (record["decision"], record["reason"]) == ("deny", "token_key_unknown")


async def test_a_different_vault_key_refuses_to_start(tmp_path: Path) -> None:
    state = tmp_path / "state"
    settings = parse_settings(
        {
            "server": {"host": "127.0.0.1", "port": 9443, "state_dir": str(state)},
            "upstreams": {"up": {"url": "http://127.0.0.1:9/mcp", "allow_insecure_http": True}},
        }
    )
    first = build_gateway(settings)
    assert first.authorization is not None
    await first.authorization.startup()
    await first.authorization.shutdown()
    (state / DEFAULT_FILENAME).unlink()  # the KEK is lost (or another host's state directory was copied)
    second = build_gateway(settings)
    assert second.authorization is not None
    with pytest.raises(ConfigError, match="no usable signing key"):
        with anyio.fail_after(10):
            await second.authorization.startup()
    await second.authorization.db.aclose()
