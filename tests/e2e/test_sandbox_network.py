"""End to end: a sandboxed server with ``network = "proxy"`` reaches exactly the ``host:port`` pairs its
profile names, through the gateway's egress proxy, and nothing else; every proxy decision is audited.

Driven through the gateway by the real client over HTTPS. The reference fetch server
(``mcp-server-fetch``) gets an error result for a host or port that is not on its list (and the audit log a
``deny`` record, ``host_not_allowed``), and the page for the one that is (``allow``). A hostile server
(``escape_server.py``) tries the ways around the proxy: direct TCP to the host's loopback services and to
IP literals, IPv6, UDP, DNS; then through it: unlisted IP literals (the address of an allowed name
included), non-canonical literals, unlisted ports, the cloud metadata address, a CONNECT tunnel to an
unlisted port, and allowed names that resolve to addresses the profile does not open (DNS rebinding).
All fail; the gateway stays up and another upstream keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import sys
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import anyio
import pytest
from mcp import Client
from mcp_types import TextContent

from mcp_bastion.sandbox.check import probe
from tests.e2e.gateway import RunningGateway, mcp_session, running_gateway
from tests.helpers.egress_audit import decision, egress, egress_records
from tests.helpers.pins import approve_pin
from tests.helpers.procs import child_env
from tests.helpers.web_origin import Origin, web_origin

REPORT: Final = probe()

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.e2e,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not REPORT.strict_ok, reason="the strict sandbox cannot run here (mcp-bastion sandbox check)"),
]

ESCAPE: Final = str(Path(__file__).resolve().parent / "escape_server.py")
SERVER: Final = str(Path(__file__).resolve().parents[1] / "upstream" / "stdio_server.py")
BIN: Final = Path(sys.executable).parent
WAIT: Final = 30
LOOPBACK: Final = ["127.0.0.1/32", "::1/128"]
"""What ``localhost`` may resolve to: a name is refused if any of its addresses is not opened."""
PAGE: Final = (
    b"<html><head><title>Allowed</title></head><body><article><h1>Allowed origin</h1>"
    + (b"<p>This page was reached through the egress proxy, the only way out of the sandbox.</p>" * 3)
    + b"</article></body></html>"
)

# Landlock (ABI 4+) refuses a TCP connect to any port but the forwarder's with EACCES before routing;
# without it the sandbox's own network namespace answers (its loopback has nothing listening; it has no route).
TCP_LOOPBACK_REFUSED: Final = "denied EACCES" if REPORT.landlock_abi >= 4 else "denied ECONNREFUSED"
TCP_ROUTE_REFUSED: Final = "denied EACCES" if REPORT.landlock_abi >= 4 else "denied ENETUNREACH"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def origin() -> AsyncIterator[Origin]:
    pages = {"/robots.txt": ("text/plain", b"User-agent: *\nAllow: /\n"), "/page.html": ("text/html", PAGE)}
    async with web_origin(pages) as running:
        yield running


@pytest.fixture(scope="module")
def closed_port() -> int:
    """A loopback port with nothing listening (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
async def gw(
    tmp_path_factory: pytest.TempPathFactory, origin: Origin, closed_port: int
) -> AsyncIterator[RunningGateway]:
    fetch = shutil.which("mcp-server-fetch", path=str(BIN))
    if fetch is None:
        pytest.skip("mcp-server-fetch is not installed in this environment (pip install '.[test]')")
    internal = {"egress_allowed_networks": LOOPBACK, "network": "proxy", "call_timeout_seconds": 20}
    upstreams = {
        # Configured as for an internal site: the name, its port, and the one network it may resolve to.
        "fetch": {
            "command": [fetch, "--allow-private-ips"],
            "env": {"PATH": str(BIN)},  # no node: see test_sandbox_benign.py
            "sandbox": {**internal, "egress": [f"localhost:{origin.port}"]},
            "tools": {"fetch": {"sinks": {"url": {"kind": "url", "allow_http": True, "allowed_networks": LOOPBACK}}}},
        },
        "escape": {
            "command": [sys.executable, ESCAPE],
            "env": child_env(),
            "sandbox": {
                **internal,
                "egress": [f"localhost:{origin.port}", f"rebind.test:{origin.port}", f"internal.test:{origin.port}"],
            },
        },
        # The same name without egress_allowed_networks: allowed names must resolve to public addresses.
        "escape_public": {
            "command": [sys.executable, ESCAPE],
            "env": child_env(),
            "sandbox": {"network": "proxy", "egress": [f"localhost:{origin.port}"], "call_timeout_seconds": 20},
        },
        "up": {"command": [sys.executable, SERVER], "env": child_env()},
    }
    tmp_path = tmp_path_factory.mktemp("network")
    async with running_gateway(tmp_path, upstreams) as running:
        async with mcp_session(running, "fetch") as session:
            with anyio.fail_after(WAIT):
                listed = {tool.name for tool in (await session.list_tools()).tools}
        if "fetch" not in listed:  # flagged by the definition scan on first sight (see test_sandbox_benign.py)
            await approve_pin(running, tmp_path / "state", "fetch", "fetch")
        yield running


async def call(session: Client, tool: str, arguments: Mapping[str, object]) -> tuple[bool, str]:
    with anyio.fail_after(WAIT):
        result = await session.call_tool(tool, dict(arguments))
    content = result.content[0]
    assert isinstance(content, TextContent)
    return bool(result.is_error), content.text


async def answer(session: Client, tool: str, arguments: Mapping[str, object]) -> str:
    error, text = await call(session, tool, arguments)
    assert not error, text
    return text


@contextlib.contextmanager
def listening(kind: socket.SocketKind) -> Iterator[socket.socket]:
    """A host loopback socket (TCP listener or UDP) that must never hear from the sandbox."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            sock.listen()
        sock.setblocking(False)
        yield sock


def untouched(sock: socket.socket) -> bool:
    """Nothing arrived: a loopback connect or datagram would be queued by the time the sender returns."""
    try:
        if sock.type == socket.SOCK_STREAM:
            sock.accept()[0].close()
        else:
            sock.recv(64)
    except BlockingIOError:
        return True
    return False


async def new_egress(gw: RunningGateway, server: str, before: int, count: int) -> list[dict[str, object]]:
    records = await egress_records(gw, server, lambda found: len(found) >= before + count)
    assert len(records) == before + count, records[before:]
    return records[before:]


async def test_fetch_reaches_only_its_listed_origin(gw: RunningGateway, origin: Origin, closed_port: int) -> None:
    allowed = f"http://localhost:{origin.port}/page.html"
    before, seen = len(egress(gw, "fetch")), len(origin.requests)
    async with mcp_session(gw, "fetch") as session:
        error, text = await call(session, "fetch", {"url": f"http://localhost:{closed_port}/page.html"})
        assert error  # robots.txt answered 403 by the proxy: the server takes that as "not allowed"
        assert "403" in text
        error, text = await call(session, "fetch", {"url": f"http://127.0.0.1:{origin.port}/page.html"})
        assert error, text  # the allowed name's own address, as a literal, is not on the list
        assert "403" in text
        error, text = await call(session, "fetch", {"url": allowed})
        assert not error, text
        assert "This page was reached through the egress proxy" in text
    records = await new_egress(gw, "fetch", before, 4)
    # Each connection is audited when it ends, so the order is not asserted.
    assert sorted(((*decision(r), r["status"], r["address"]) for r in records), key=repr) == sorted(
        [
            ("GET", "localhost", closed_port, "deny", "host_not_allowed", 403, None),  # never resolved
            ("GET", "127.0.0.1", origin.port, "deny", "host_not_allowed", 403, None),
            ("GET", "localhost", origin.port, "allow", "ok", 200, "127.0.0.1"),  # robots.txt
            ("GET", "localhost", origin.port, "allow", "ok", 200, "127.0.0.1"),  # the page
        ],
        key=repr,
    )
    assert origin.paths()[seen:] == ["/robots.txt", "/page.html"]


async def test_the_ways_around_the_proxy_are_closed(gw: RunningGateway, origin: Origin) -> None:
    before = len(egress(gw, "escape"))
    with listening(socket.SOCK_STREAM) as tcp, listening(socket.SOCK_DGRAM) as udp:
        tcp_port, udp_port = tcp.getsockname()[1], udp.getsockname()[1]
        async with mcp_session(gw, "escape") as session:
            assert await answer(session, "getenv", {"name": "HTTP_PROXY"}) == "http://127.0.0.1:3128"
            assert await answer(session, "getenv", {"name": "https_proxy"}) == "http://127.0.0.1:3128"
            # TCP straight to the host's loopback services, the allowed origin among them: the sandbox's
            # loopback is its own.
            assert await answer(session, "connect", {"host": "127.0.0.1", "port": tcp_port}) == TCP_LOOPBACK_REFUSED
            assert await answer(session, "connect", {"host": "127.0.0.1", "port": origin.port}) == TCP_LOOPBACK_REFUSED
            # IP literals elsewhere (documentation range, cloud metadata): no route, and Landlock first.
            assert await answer(session, "connect", {"host": "192.0.2.1", "port": 80}) == TCP_ROUTE_REFUSED
            assert await answer(session, "connect", {"host": "169.254.169.254", "port": 80}) == TCP_ROUTE_REFUSED
            # IPv6: the socket itself is refused (seccomp).
            assert await answer(session, "connect", {"host": "::1", "port": tcp_port}) == "denied EPERM"
            assert await answer(session, "udp", {"host": "::1", "port": udp_port}) == "denied EPERM"
            # UDP: to the host's loopback the datagram lands on the sandbox's own loopback; elsewhere, no route.
            assert await answer(session, "udp", {"host": "127.0.0.1", "port": udp_port}) == "ok"
            assert await answer(session, "udp", {"host": "192.0.2.53", "port": 53}) == "denied ENETUNREACH"
            assert await answer(session, "udp", {"host": "8.8.8.8", "port": 53}) == "denied ENETUNREACH"
            # DNS: no resolver configuration and nothing to reach (the proxy resolves, for listed names only).
            assert (await answer(session, "resolve", {"name": "example.com"})).startswith("denied gaierror")
            assert (await answer(session, "resolve", {"name": "rebind.test"})).startswith("denied gaierror")
            # The forwarder is the one thing it can connect to.
            assert await answer(session, "connect", {"host": "127.0.0.1", "port": 3128}) == "ok"
        assert untouched(tcp)
        assert untouched(udp)
    assert egress(gw, "escape")[before:] == []  # none of it reached the proxy (the port probe sent nothing)


async def test_the_proxy_refuses_what_the_list_does_not_name(
    gw: RunningGateway, origin: Origin, closed_port: int
) -> None:
    port = origin.port
    before, seen = len(egress(gw, "escape")), len(origin.requests)
    attempts: list[tuple[str, str, str, int | None, str]] = [
        # (tool, target, expected answer, audited port, audited reason)
        ("http_via_proxy", f"http://localhost:{port}/page.html", "HTTP 200 <html>", port, "ok"),
        ("http_via_proxy", f"http://127.0.0.1:{port}/page.html", "HTTP 403 403 Forbidden: host_not_allowed", port,
         "host_not_allowed"),
        ("http_via_proxy", f"http://localhost:{closed_port}/", "HTTP 403 403 Forbidden: host_not_allowed",
         closed_port, "host_not_allowed"),
        ("http_via_proxy", f"http://[::1]:{port}/", "HTTP 403 403 Forbidden: host_not_allowed", port,
         "host_not_allowed"),
        ("http_via_proxy", f"http://2130706433:{port}/", "HTTP 403 403 Forbidden: ip_literal_noncanonical", port,
         "ip_literal_noncanonical"),
        ("http_via_proxy", "http://169.254.169.254/latest/meta-data/", "HTTP 403 403 Forbidden: host_not_allowed",
         80, "host_not_allowed"),
        ("http_via_proxy", "http://example.com/", "HTTP 403 403 Forbidden: host_not_allowed", 80,
         "host_not_allowed"),
        ("connect_via_proxy", "localhost:22", "HTTP/1.1 403 Forbidden", 22, "host_not_allowed"),
        ("connect_via_proxy", f"127.0.0.1:{port}", "HTTP/1.1 403 Forbidden", port, "host_not_allowed"),
        ("connect_via_proxy", f"localhost:{port}", "HTTP/1.1 200 Connection established", port, "ok"),
    ]  # fmt: skip
    async with mcp_session(gw, "escape") as session:
        for tool, target, expected, _, _ in attempts:
            argument = {"location": target} if tool == "http_via_proxy" else {"target": target}
            got = await answer(session, tool, argument)
            assert got.startswith(expected), (target, got)
    records = await new_egress(gw, "escape", before, len(attempts))
    # Each connection is audited when it ends: compare as sets of (method, port, decision, reason).
    expected_records = sorted(
        (
            "CONNECT" if tool == "connect_via_proxy" else "GET",
            audited_port,
            "allow" if reason == "ok" else "deny",
            reason,
        )
        for tool, _, _, audited_port, reason in attempts
    )
    assert sorted((r["method"], r["port"], r["decision"], r["reason"]) for r in records) == expected_records
    denied = [r for r in records if r["decision"] == "deny"]
    assert all(r["address"] is None for r in denied)  # refused before any lookup or connection
    assert {r["host"] for r in denied} >= {"127.0.0.1", "::1", "169.254.169.254", "example.com", "localhost"}
    assert origin.paths()[seen:] == ["/page.html"]  # the tunnel was opened, but nothing sent through it


class Resolver:
    """DNS as the gateway's proxy sees it: ``answers[name]`` lists successive answers (the last repeats);
    other names go to the real resolver. Installed on the running loop, where ``netguard`` asks."""

    def __init__(self, real: Any, answers: dict[str, Sequence[Sequence[str]]]) -> None:
        self.real = real
        self.answers = answers
        self.asked: list[str] = []

    async def __call__(self, host: Any, port: Any, *args: Any, **kw: Any) -> list[tuple[Any, ...]]:
        if host not in self.answers:
            return await self.real(host, port, *args, **kw)  # type: ignore[no-any-return]
        self.asked.append(host)
        answers = self.answers[host]
        chosen = answers[min(self.asked.count(host), len(answers)) - 1]
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (a, port, 0, 0))
            if ":" in a
            else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in chosen
        ]


async def test_allowed_names_that_resolve_to_unopened_addresses_are_refused(
    gw: RunningGateway, origin: Origin, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = asyncio.get_running_loop()
    dns = Resolver(
        loop.getaddrinfo,
        {
            # Rebinding: the first answer is the allowed network, the next one another loopback address.
            "rebind.test": [["127.0.0.1"], ["127.0.0.2"]],
            # A mixed answer: one address outside the opened network is enough to refuse.
            "internal.test": [["127.0.0.1", "10.0.0.7"], ["169.254.169.254"]],
        },
    )
    monkeypatch.setattr(loop, "getaddrinfo", dns)
    port = origin.port
    before, seen = len(egress(gw, "escape")), len(origin.requests)
    async with mcp_session(gw, "escape") as session:
        page = f"http://rebind.test:{port}/page.html"
        assert (await answer(session, "http_via_proxy", {"location": page})).startswith("HTTP 200 <html>")
        assert await answer(session, "http_via_proxy", {"location": page}) == (
            "HTTP 403 403 Forbidden: address_loopback"
        )
        assert await answer(session, "connect_via_proxy", {"target": f"rebind.test:{port}"}) == (
            "HTTP/1.1 403 Forbidden"
        )
        inside = f"http://internal.test:{port}/page.html"
        assert await answer(session, "http_via_proxy", {"location": inside}) == (
            "HTTP 403 403 Forbidden: address_private"
        )
        assert await answer(session, "http_via_proxy", {"location": inside}) == (
            "HTTP 403 403 Forbidden: address_metadata"
        )
    assert dns.asked == ["rebind.test"] * 3 + ["internal.test"] * 2  # once per connection, never again
    records = await new_egress(gw, "escape", before, 5)
    assert sorted((r["method"], r["host"], r["decision"], r["reason"], r["address"]) for r in records) == sorted(
        [
            ("GET", "rebind.test", "allow", "ok", "127.0.0.1"),
            ("GET", "rebind.test", "deny", "address_loopback", "127.0.0.2"),
            ("CONNECT", "rebind.test", "deny", "address_loopback", "127.0.0.2"),
            ("GET", "internal.test", "deny", "address_private", "10.0.0.7"),
            ("GET", "internal.test", "deny", "address_metadata", "169.254.169.254"),
        ]
    )
    assert origin.paths()[seen:] == ["/page.html"]  # and it came from the proxy's vetted connection
    assert origin.requests[-1].headers["host"] == f"rebind.test:{port}"


async def test_without_allowed_networks_a_name_must_resolve_to_a_public_address(
    gw: RunningGateway, origin: Origin
) -> None:
    before, seen = len(egress(gw, "escape_public")), len(origin.requests)
    async with mcp_session(gw, "escape_public") as session:
        page = f"http://localhost:{origin.port}/page.html"  # listed, but localhost is 127.0.0.1 (the real resolver)
        assert await answer(session, "http_via_proxy", {"location": page}) == (
            "HTTP 403 403 Forbidden: address_loopback"
        )
    (record,) = await new_egress(gw, "escape_public", before, 1)
    assert decision(record) == ("GET", "localhost", origin.port, "deny", "address_loopback")
    assert record["address"] in ("127.0.0.1", "::1")  # the first address refused
    assert origin.paths()[seen:] == []


async def test_the_gateway_and_the_other_upstreams_keep_serving(gw: RunningGateway, origin: Origin) -> None:
    async with mcp_session(gw, "up") as session:
        assert await answer(session, "echo", {"text": "still here"}) == "still here"
    async with mcp_session(gw, "escape") as session:
        assert (await answer(session, "whoami", {})).startswith("uid=65534 ")
    async with mcp_session(gw, "fetch") as session:
        text = await answer(session, "fetch", {"url": f"http://localhost:{origin.port}/page.html"})
        assert "This page was reached through the egress proxy" in text
    failures = [r for r in gw.audit() if r.get("kind") == "egress" and r.get("decision") == "error"]
    assert failures == []  # the proxy itself never failed
