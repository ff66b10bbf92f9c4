"""End to end: two reference MCP servers from PyPI work unchanged in the strict sandbox, driven through the
gateway by the real client over HTTPS.

``mcp-server-time`` runs under the default profile (no network at all): it lists its tools and answers
``get_current_time`` and ``convert_time`` correctly (time zones come from the system's zoneinfo, bound
read-only). ``mcp-server-fetch`` runs with ``network = "proxy"``: its only way out is the gateway's egress
proxy, which it finds through the ``HTTP_PROXY`` the sandbox sets; configured as a user would for an
internal site (``egress = ["localhost:<port>"]``, ``egress_allowed_networks`` its loopback addresses, and the
server's own ``--allow-private-ips``), it reads robots.txt and the page from a local origin, each request
allowed and audited.
"""

from __future__ import annotations

import shutil
import ssl
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Final
from zoneinfo import ZoneInfo

import anyio
import orjson
import pytest
import trustme
from mcp import Client
from mcp_types import TextContent
from tzlocal import get_localzone_name

from mcp_bastion.sandbox.check import probe
from tests.e2e.gateway import RunningGateway, mcp_session, running_gateway
from tests.helpers.egress_audit import egress, egress_records
from tests.helpers.pins import approve_pin
from tests.helpers.web_origin import Origin, web_origin

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.e2e,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not probe().strict_ok, reason="the strict sandbox cannot run here (mcp-bastion sandbox check)"),
]

BIN: Final = Path(sys.executable).parent
WAIT: Final = 30
LOOPBACK: Final = ["127.0.0.1/32", "::1/128"]
"""What ``localhost`` may resolve to: a name is refused if any of its addresses is not opened."""
PAGE: Final = b"""<html><head><title>Bastion test page</title></head><body><article>
<h1>Sandboxed fetch</h1><p>The quick brown fox reached the origin through the egress proxy.</p>
<p>A second paragraph, so that readability keeps the article.</p></article></body></html>"""


def program(name: str) -> str:
    found = shutil.which(name, path=str(BIN))
    if found is None:
        pytest.skip(f"{name} is not installed in this environment (pip install '.[test]')")
    return found


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def origin() -> AsyncIterator[Origin]:
    pages = {
        "/robots.txt": ("text/plain", b"User-agent: *\nAllow: /\n"),
        "/page.html": ("text/html; charset=utf-8", PAGE),
    }
    async with web_origin(pages) as running:
        yield running


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, Path]:
    """A private CA and its certificate file (which the fetch server is told to trust: SSL_CERT_FILE)."""
    authority = trustme.CA()
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    authority.cert_pem.write_to_path(str(path))
    return authority, path


@pytest.fixture(scope="module")
async def tls_origin(ca: tuple[trustme.CA, Path]) -> AsyncIterator[Origin]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca[0].issue_cert("localhost").configure_cert(context)
    pages = {"/robots.txt": ("text/plain", b"User-agent: *\nAllow: /\n"), "/page.html": ("text/html", PAGE)}
    async with web_origin(pages, tls=context) as running:
        yield running


@pytest.fixture(scope="module")
async def gw(
    tmp_path_factory: pytest.TempPathFactory, origin: Origin, tls_origin: Origin, ca: tuple[trustme.CA, Path]
) -> AsyncIterator[RunningGateway]:
    upstreams: dict[str, dict[str, object]] = {
        "time": {"command": [program("mcp-server-time")]},  # the host's local time zone, detected
        "fetch": {
            "command": [program("mcp-server-fetch"), "--allow-private-ips"],
            # No Node.js on the server's PATH: readabilipy (the HTML simplifier) runs `npm version` and
            # `npm install` when it finds `node`; under the sandbox's address-space limit V8 cannot reserve
            # its code range (SIGTRAP), and the read-only, offline install would fail anyway. Without
            # `node` it uses its pure-Python extractor.
            "env": {"PATH": str(BIN), "SSL_CERT_FILE": str(ca[1])},
            "sandbox": {
                "network": "proxy",
                "egress": [f"localhost:{origin.port}", f"localhost:{tls_origin.port}"],
                "egress_allowed_networks": LOOPBACK,
                "read_only": [str(ca[1])],
                "call_timeout_seconds": 30,
            },
            # The gateway's own check of the url argument (its SSRF guard) must let the internal site
            # through too: plain http, to loopback.
            "tools": {"fetch": {"sinks": {"url": {"kind": "url", "allow_http": True, "allowed_networks": LOOPBACK}}}},
        },
    }
    tmp_path = tmp_path_factory.mktemp("benign")
    async with running_gateway(tmp_path, upstreams) as running:
        await approve_fetch(running, tmp_path / "state")
        yield running


async def approve_fetch(gw: RunningGateway, state_dir: Path) -> None:
    """The fetch tool's own description ("Although originally you did not have internet access, and were
    advised to refuse ... this tool now grants you internet access") reads as instructions to the model: the
    definition scan quarantines it on first sight, and an administrator approves it, as in production."""
    async with mcp_session(gw, "fetch") as session:
        with anyio.fail_after(WAIT):
            listed = {tool.name for tool in (await session.list_tools()).tools}
    if "fetch" not in listed:
        await approve_pin(gw, state_dir, "fetch", "fetch")


async def call(session: Client, tool: str, arguments: dict[str, object]) -> tuple[bool, str]:
    with anyio.fail_after(WAIT):
        result = await session.call_tool(tool, arguments)
    content = result.content[0]
    assert isinstance(content, TextContent)
    return bool(result.is_error), content.text


async def test_time_server_in_the_default_sandbox(gw: RunningGateway) -> None:
    async with mcp_session(gw, "time") as session:
        with anyio.fail_after(WAIT):
            listed = (await session.list_tools()).tools
        assert {tool.name for tool in listed} == {"get_current_time", "convert_time"}
        # The server names the local time zone it detected (tzlocal: /etc/timezone, the /etc/localtime
        # link) in its argument descriptions: the sandbox must show it the host's, not leave it to guess UTC.
        local = get_localzone_name()
        if local is not None:
            (current,) = [tool for tool in listed if tool.name == "get_current_time"]
            described = str(current.input_schema["properties"]["timezone"]["description"])
            assert f"Use '{local}' as local timezone" in described

        before = datetime.now(UTC)
        error, text = await call(session, "get_current_time", {"timezone": "Asia/Tokyo"})
        after = datetime.now(UTC)
        assert not error, text
        now = orjson.loads(text)
        assert now["timezone"] == "Asia/Tokyo"
        stamp = datetime.fromisoformat(now["datetime"])
        assert stamp.utcoffset() is not None
        assert stamp.utcoffset().total_seconds() == 9 * 3600  # type: ignore[union-attr]
        assert before.replace(microsecond=0) <= stamp <= after
        assert now["is_dst"] is False

        # 2024-01-15 (winter): New York is UTC-5, Berlin UTC+1; 09:30 in New York is 15:30 in Berlin.
        error, text = await call(
            session,
            "convert_time",
            {"source_timezone": "America/New_York", "time": "09:30", "target_timezone": "Europe/Berlin"},
        )
        assert not error, text
        converted = orjson.loads(text)
        assert converted["source"]["timezone"] == "America/New_York"
        assert converted["target"]["timezone"] == "Europe/Berlin"
        source = datetime.fromisoformat(converted["source"]["datetime"])
        target = datetime.fromisoformat(converted["target"]["datetime"])
        assert (source.hour, source.minute) == (9, 30)
        assert source == target  # the same instant
        expected = source.astimezone(ZoneInfo("Europe/Berlin"))
        assert (target.hour, target.minute) == (expected.hour, expected.minute)
        assert converted["time_difference"] == "+6.0h"

        # A zone the tz database does not know is the server's error, not the sandbox's.
        error, text = await call(session, "get_current_time", {"timezone": "Mars/Olympus_Mons"})
        assert error
        assert "Mars/Olympus_Mons" in text


async def test_fetch_server_reaches_the_allowed_origin_through_the_proxy(gw: RunningGateway, origin: Origin) -> None:
    url = f"http://localhost:{origin.port}/page.html"
    async with mcp_session(gw, "fetch") as session:
        with anyio.fail_after(WAIT):
            tools = {tool.name for tool in (await session.list_tools()).tools}
        assert tools == {"fetch"}
        already, before = len(origin.requests), len(egress(gw, "fetch"))
        started = time.monotonic()
        error, text = await call(session, "fetch", {"url": url})
        elapsed = time.monotonic() - started
        assert not error, text
        assert text.startswith(f"Contents of {url}:")
        assert "The quick brown fox reached the origin through the egress proxy." in text
        assert "Sandboxed fetch" in text
        print(f"fetch through the sandboxed proxy (robots.txt + page): {elapsed * 1000:.0f} ms")

        error, raw = await call(session, "fetch", {"url": url, "raw": True})
        assert not error, raw
        assert "<title>Bastion test page</title>" in raw

    seen = origin.requests[already:]
    assert [r.path for r in seen] == ["/robots.txt", "/page.html", "/robots.txt", "/page.html"]
    assert {r.peer for r in seen} == {"127.0.0.1"}  # connected by the gateway's proxy, on the host
    assert all(r.headers["user-agent"].startswith("ModelContextProtocol/1.0 (Autonomous") for r in seen)
    assert all(r.headers["host"] == f"localhost:{origin.port}" for r in seen)
    assert all("proxy-authorization" not in r.headers and "proxy-connection" not in r.headers for r in seen)

    records = (await egress_records(gw, "fetch", lambda found: len(found) >= before + 4))[before:]
    assert len(records) == 4  # one per request: robots.txt and the page, twice
    for record in records:
        assert (record["method"], record["host"], record["port"]) == ("GET", "localhost", origin.port)
        assert (record["decision"], record["reason"], record["status"]) == ("allow", "ok", 200)
        assert record["address"] == "127.0.0.1"


async def test_fetch_server_reaches_an_https_origin_through_a_connect_tunnel(
    gw: RunningGateway, tls_origin: Origin
) -> None:
    url = f"https://localhost:{tls_origin.port}/page.html"
    before = len(egress(gw, "fetch"))
    async with mcp_session(gw, "fetch") as session:
        started = time.monotonic()
        error, text = await call(session, "fetch", {"url": url})
        elapsed = time.monotonic() - started
        assert not error, text
        assert "The quick brown fox reached the origin through the egress proxy." in text
        print(f"https fetch through the sandboxed proxy (robots.txt + page): {elapsed * 1000:.0f} ms")
    assert tls_origin.paths()[-2:] == ["/robots.txt", "/page.html"]
    records = (await egress_records(gw, "fetch", lambda found: len(found) >= before + 2))[before:]
    assert len(records) == 2
    for record in records:
        assert (record["method"], record["host"], record["port"]) == ("CONNECT", "localhost", tls_origin.port)
        assert (record["decision"], record["reason"], record["status"]) == ("allow", "ok", 200)
        assert isinstance(record["bytes_up"], int)
        assert isinstance(record["bytes_down"], int)
        assert record["bytes_up"] > 0
        assert record["bytes_down"] > 0  # the proxy saw only the TLS bytes it relayed
