"""The SSRF guard: address classes, strict host parsing, policies, resolution (every address vetted), and the
aiohttp resolver + socket factory against a real server on loopback."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web

from mcp_bastion import netguard
from mcp_bastion.netguard import Policy, SSRFBlocked

pytestmark = pytest.mark.anyio

BOUND = 10.0
Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


# -- a real server that counts connections -------------------------------------------------------------


@dataclass
class Served:
    """What a test server saw: TCP connections accepted and requests (path with query, headers)."""

    port: int = 0
    connections: int = 0
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    @property
    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]


@asynccontextmanager
async def serve(handler: Handler, *, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[Served]:
    """Serve ``handler`` on 127.0.0.1, counting connections at the TCP level (before TLS, before HTTP)."""
    served = Served()

    async def recording(request: web.BaseRequest) -> web.StreamResponse:
        served.requests.append((request.path_qs, dict(request.headers)))
        return await handler(request)

    server = web.Server(recording)

    def accept() -> Any:
        served.connections += 1
        return server()

    listener = await asyncio.get_running_loop().create_server(accept, "127.0.0.1", 0, ssl=ssl_context)
    served.port = listener.sockets[0].getsockname()[1]
    try:
        yield served
    finally:
        listener.close()
        await server.shutdown(timeout=1.0)
        await listener.wait_closed()


async def hello(request: web.BaseRequest) -> web.StreamResponse:
    return web.Response(text="hello")


# -- classify ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("8.8.8.8", None, id="v4-public"),
        pytest.param("1.1.1.1", None, id="v4-public-2"),
        pytest.param("127.0.0.1", "loopback", id="v4-loopback"),
        pytest.param("127.255.255.254", "loopback", id="v4-loopback-range"),
        pytest.param("10.1.2.3", "private", id="rfc1918-10"),
        pytest.param("172.16.0.1", "private", id="rfc1918-172.16"),
        pytest.param("172.31.255.255", "private", id="rfc1918-172.31"),
        pytest.param("172.32.0.1", None, id="just-outside-172.16/12"),
        pytest.param("192.168.1.1", "private", id="rfc1918-192.168"),
        pytest.param("100.64.0.1", "cgnat", id="cgnat"),
        pytest.param("100.127.255.255", "cgnat", id="cgnat-end"),
        pytest.param("169.254.1.1", "link_local", id="v4-link-local"),
        pytest.param("169.254.169.254", "metadata", id="aws-gcp-azure-metadata"),
        pytest.param("169.254.170.2", "metadata", id="ecs-metadata"),
        pytest.param("100.100.100.200", "metadata", id="alibaba-metadata"),
        pytest.param("192.0.0.192", "metadata", id="oracle-metadata"),
        pytest.param("0.0.0.0", "unspecified", id="v4-unspecified"),
        pytest.param("0.1.2.3", "unspecified", id="this-network"),
        pytest.param("224.0.0.1", "multicast", id="v4-multicast"),
        pytest.param("239.255.255.250", "multicast", id="ssdp"),
        pytest.param("255.255.255.255", "reserved", id="broadcast"),
        pytest.param("240.0.0.1", "reserved", id="class-e"),
        pytest.param("198.18.0.1", "reserved", id="benchmarking"),
        pytest.param("192.0.0.8", "reserved", id="ietf-protocol-assignments"),
        pytest.param("192.0.2.1", "documentation", id="test-net-1"),
        pytest.param("198.51.100.1", "documentation", id="test-net-2"),
        pytest.param("203.0.113.1", "documentation", id="test-net-3"),
        pytest.param("2606:4700:4700::1111", None, id="v6-public"),
        pytest.param("::1", "loopback", id="v6-loopback"),
        pytest.param("::", "unspecified", id="v6-unspecified"),
        pytest.param("fc00::1", "private", id="ula-fc"),
        pytest.param("fd12:3456::1", "private", id="ula-fd"),
        pytest.param("fec0::1", "private", id="site-local"),
        pytest.param("fe80::1", "link_local", id="v6-link-local"),
        pytest.param("fe80::1%eth0", "link_local", id="v6-link-local-zone"),
        pytest.param("fd00:ec2::254", "metadata", id="aws-metadata-v6"),
        pytest.param("ff02::1", "multicast", id="v6-multicast"),
        pytest.param("2001:db8::1", "documentation", id="v6-documentation"),
        pytest.param("3fff::1", "documentation", id="v6-documentation-rfc9637"),
        pytest.param("2001::1", "reserved", id="teredo"),
        pytest.param("100::1", "reserved", id="discard-only"),
        pytest.param("::127.0.0.1", "reserved", id="ipv4-compatible"),
        pytest.param("5f00::1", "reserved", id="outside-2000::/3"),
        pytest.param("::ffff:127.0.0.1", "ipv4_mapped", id="mapped-loopback"),
        pytest.param("::ffff:10.0.0.1", "ipv4_mapped", id="mapped-private"),
        pytest.param("::ffff:7f00:1", "ipv4_mapped", id="mapped-loopback-hex"),
        pytest.param("::ffff:169.254.169.254", "metadata", id="mapped-metadata"),
        pytest.param("::ffff:8.8.8.8", None, id="mapped-public"),
        pytest.param("64:ff9b::127.0.0.1", "ipv4_mapped", id="nat64-loopback"),
        pytest.param("64:ff9b::a9fe:a9fe", "metadata", id="nat64-metadata"),
        pytest.param("64:ff9b::808:808", None, id="nat64-public"),
        pytest.param("64:ff9b:1::a00:1", "reserved", id="nat64-local-use"),
        pytest.param("2002:7f00:1::1", "ipv4_mapped", id="6to4-loopback"),
        pytest.param("2002:c0a8:101::1", "ipv4_mapped", id="6to4-private"),
        pytest.param("2002:a9fe:a9fe::1", "metadata", id="6to4-metadata"),
        pytest.param("2002:808:808::1", None, id="6to4-public"),
    ],
)
def test_classify(text: str, expected: str | None) -> None:
    assert netguard.classify(ipaddress.ip_address(text)) == expected


# -- parse_host -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        pytest.param("example.com", "example.com", id="name"),
        pytest.param("Example.COM", "example.com", id="name-lowercased"),
        pytest.param("localhost.", "localhost.", id="fqdn-trailing-dot"),
        pytest.param("_service.internal", "_service.internal", id="underscore"),
        pytest.param("xn--bcher-kva.example", "xn--bcher-kva.example", id="punycode"),
        pytest.param("127.0.0.1", ipaddress.IPv4Address("127.0.0.1"), id="dotted-quad"),
        pytest.param("8.8.8.8", ipaddress.IPv4Address("8.8.8.8"), id="dotted-quad-public"),
        pytest.param("::1", ipaddress.IPv6Address("::1"), id="v6"),
        pytest.param("[::1]", ipaddress.IPv6Address("::1"), id="v6-bracketed"),
        pytest.param("[::FFFF:127.0.0.1]", ipaddress.IPv6Address("::ffff:7f00:1"), id="v6-mapped-dotted"),
        pytest.param("[0:0:0:0:0:0:0:1]", ipaddress.IPv6Address("::1"), id="v6-uncompressed"),
    ],
)
def test_parse_host(host: str, expected: object) -> None:
    assert netguard.parse_host(host) == expected


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        pytest.param("2130706433", "ip_literal_noncanonical", id="decimal"),
        pytest.param("0x7f000001", "ip_literal_noncanonical", id="hex"),
        pytest.param("017700000001", "ip_literal_noncanonical", id="octal"),
        pytest.param("0x7f.1", "ip_literal_noncanonical", id="hex-short"),
        pytest.param("0177.0.0.1", "ip_literal_noncanonical", id="octal-octet"),
        pytest.param("127.1", "ip_literal_noncanonical", id="two-parts"),
        pytest.param("127.0.1", "ip_literal_noncanonical", id="three-parts"),
        pytest.param("127.000.000.001", "ip_literal_noncanonical", id="zero-padded"),
        pytest.param("127.0.0.1.", "ip_literal_noncanonical", id="trailing-dot"),
        pytest.param("127.0.0.1..", "host_malformed", id="two-trailing-dots"),
        pytest.param("256.0.0.1", "ip_literal_noncanonical", id="octet-too-big"),
        pytest.param("1.2.3.4.5", "ip_literal_noncanonical", id="five-parts"),
        pytest.param("example.0x10", "ip_literal_noncanonical", id="numeric-last-label"),
        pytest.param("0x", "ip_literal_noncanonical", id="bare-0x"),
        pytest.param("", "host_malformed", id="empty"),
        pytest.param(".", "host_malformed", id="root"),
        pytest.param("a..b", "host_malformed", id="empty-label"),
        pytest.param("-a.example", "host_malformed", id="leading-hyphen"),
        pytest.param("a b.example", "host_malformed", id="space"),
        pytest.param("exa%6dple.com", "host_malformed", id="percent"),
        pytest.param("bücher.example", "host_malformed", id="non-ascii"),
        pytest.param("evil.com\x00.good.com", "host_malformed", id="nul"),
        pytest.param("a" * 64 + ".example", "host_malformed", id="label-too-long"),
        pytest.param(("a" * 60 + ".") * 5 + "example", "host_malformed", id="name-too-long"),
        pytest.param("[::1", "host_malformed", id="unbalanced-bracket"),
        pytest.param("[127.0.0.1]", "host_malformed", id="bracketed-v4"),
        pytest.param("[fe80::1%eth0]", "host_malformed", id="v6-zone"),
        pytest.param("[fe80::1%25eth0]", "host_malformed", id="v6-zone-encoded"),
        pytest.param("[::ffff:127.1]", "host_malformed", id="v6-mapped-shorthand"),
        pytest.param("1::2::3", "host_malformed", id="v6-double-gap"),
        pytest.param("user@host", "host_malformed", id="userinfo"),
    ],
)
def test_parse_host_refuses(host: str, reason: str) -> None:
    with pytest.raises(SSRFBlocked) as caught:
        netguard.parse_host(host)
    assert caught.value.reason == reason


# -- Policy ---------------------------------------------------------------------------------------------

LOOPBACK_OK = Policy(allow_loopback=True)
PRIVATE_OK = Policy(allow_private=True)
TRUSTED = Policy(allowed_hosts=frozenset({"Internal.Example."}))
NETWORKS = Policy(allowed_networks=netguard.networks(["10.1.0.0/16", "169.254.169.254/32", "fd00::/8"]))


@pytest.mark.parametrize(
    ("policy", "address", "host", "expected"),
    [
        pytest.param(Policy(), "127.0.0.1", None, "loopback", id="default-loopback"),
        pytest.param(Policy(), "10.0.0.1", None, "private", id="default-private"),
        pytest.param(Policy(), "93.184.216.34", None, None, id="default-public"),
        pytest.param(LOOPBACK_OK, "127.0.0.1", None, None, id="loopback-allowed"),
        pytest.param(LOOPBACK_OK, "::1", None, None, id="loopback-v6-allowed"),
        pytest.param(LOOPBACK_OK, "::ffff:127.0.0.1", None, "ipv4_mapped", id="loopback-mapped-still-refused"),
        pytest.param(LOOPBACK_OK, "10.0.0.1", None, "private", id="loopback-not-private"),
        pytest.param(LOOPBACK_OK, "0.0.0.0", None, "unspecified", id="loopback-not-unspecified"),
        pytest.param(PRIVATE_OK, "10.0.0.1", None, None, id="private-allowed"),
        pytest.param(PRIVATE_OK, "fd12::1", None, None, id="ula-allowed"),
        pytest.param(PRIVATE_OK, "100.64.0.1", None, None, id="cgnat-allowed-as-private"),
        pytest.param(PRIVATE_OK, "127.0.0.1", None, "loopback", id="private-not-loopback"),
        pytest.param(PRIVATE_OK, "169.254.1.1", None, "link_local", id="private-not-link-local"),
        pytest.param(PRIVATE_OK, "169.254.169.254", None, "metadata", id="private-not-metadata"),
        pytest.param(PRIVATE_OK, "fd00:ec2::254", None, "metadata", id="private-not-metadata-v6"),
        pytest.param(TRUSTED, "10.0.0.1", "internal.example", None, id="trusted-host-private"),
        pytest.param(TRUSTED, "127.0.0.1", "INTERNAL.example.", None, id="trusted-host-spelling"),
        pytest.param(TRUSTED, "169.254.169.254", "internal.example", "metadata", id="trusted-host-not-metadata"),
        pytest.param(TRUSTED, "10.0.0.1", "other.example", "private", id="untrusted-host"),
        pytest.param(NETWORKS, "10.1.2.3", None, None, id="network-allowed"),
        pytest.param(NETWORKS, "10.2.0.1", None, "private", id="outside-network"),
        pytest.param(NETWORKS, "169.254.169.254", None, None, id="metadata-by-network-only"),
        pytest.param(NETWORKS, "fd00:ec2::254", None, None, id="metadata-v6-by-network"),
        pytest.param(NETWORKS, "::ffff:10.1.2.3", None, "ipv4_mapped", id="network-v4-not-v6"),
    ],
)
def test_policy(policy: Policy, address: str, host: str | None, expected: str | None) -> None:
    ip = ipaddress.ip_address(address)
    assert policy.refusal(ip, trusted_host=host is not None and policy.trusts(host)) == expected
    if expected is None:
        netguard.check_address(ip, policy, host=host)
    else:
        with pytest.raises(SSRFBlocked) as caught:
            netguard.check_address(ip, policy, host=host)
        assert (caught.value.reason, caught.value.address) == (expected, ip)


def test_policy_is_frozen_and_normalised() -> None:
    policy = Policy(allowed_hosts=frozenset({"A.Example.", "[::1]"}))
    assert policy.allowed_hosts == frozenset({"a.example", "::1"})
    with pytest.raises(AttributeError):
        policy.allow_loopback = True  # type: ignore[misc]


# -- check_host -----------------------------------------------------------------------------------------

FakeInfos = list[tuple[int, int, int, str, tuple[Any, ...]]]


def infos(*addresses: str) -> FakeInfos:
    return [
        (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (a, 443, 0, 0))
        if ":" in a
        else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, 443))
        for a in addresses
    ]


@pytest.fixture
async def fake_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, FakeInfos]:
    """Answers for the running loop's ``getaddrinfo``; names not listed fail like an unknown name."""
    answers: dict[str, FakeInfos] = {}

    async def getaddrinfo(host: str, port: int, **kwargs: Any) -> FakeInfos:
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return answers[host]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", getaddrinfo)
    return answers


async def test_localhost_is_refused_by_default() -> None:
    with pytest.raises(SSRFBlocked) as caught:
        await netguard.check_host("localhost", 443, Policy())
    assert (caught.value.reason, caught.value.host) == ("loopback", "localhost")
    assert caught.value.address is not None
    assert caught.value.address.is_loopback


async def test_localhost_with_loopback_allowed() -> None:
    resolved = await netguard.check_host("localhost", 8443, LOOPBACK_OK)
    assert resolved
    assert all(item.address.is_loopback and item.hostname == "localhost" for item in resolved)
    assert {item.port for item in resolved} == {8443}


@pytest.mark.parametrize(
    ("host", "policy", "reason"),
    [
        pytest.param("127.0.0.1", Policy(), "loopback", id="v4-literal"),
        pytest.param("[::1]", Policy(), "loopback", id="v6-literal"),
        pytest.param("169.254.169.254", LOOPBACK_OK, "metadata", id="metadata-literal"),
        pytest.param("[::ffff:127.0.0.1]", LOOPBACK_OK, "ipv4_mapped", id="mapped-literal"),
        pytest.param("2130706433", LOOPBACK_OK, "ip_literal_noncanonical", id="decimal-literal"),
        pytest.param("0x7f.1", LOOPBACK_OK, "ip_literal_noncanonical", id="hex-literal"),
    ],
)
async def test_literals_are_checked_without_dns(
    fake_dns: dict[str, FakeInfos], host: str, policy: Policy, reason: str
) -> None:
    with pytest.raises(SSRFBlocked) as caught:
        await netguard.check_host(host, 443, policy)
    assert caught.value.reason == reason


async def test_public_literal_passes(fake_dns: dict[str, FakeInfos]) -> None:
    [item] = await netguard.check_host("8.8.8.8", 443, Policy())
    assert (item.hostname, item.address, item.port, item.family) == (
        "8.8.8.8",
        ipaddress.IPv4Address("8.8.8.8"),
        443,
        socket.AF_INET,
    )


async def test_every_address_is_returned_once(fake_dns: dict[str, FakeInfos]) -> None:
    fake_dns["app.example"] = infos("93.184.216.34", "2606:2800:220:1::1", "93.184.216.34")
    resolved = await netguard.check_host("App.Example", 443, Policy())
    assert [str(item.address) for item in resolved] == ["93.184.216.34", "2606:2800:220:1::1"]
    assert [item.family for item in resolved] == [socket.AF_INET, socket.AF_INET6]
    assert {item.hostname for item in resolved} == {"App.Example"}  # as given: for SNI and Host


@pytest.mark.parametrize(
    ("answers", "reason"),
    [
        pytest.param(("93.184.216.34", "10.0.0.1"), "private", id="public-then-private"),
        pytest.param(("10.0.0.1", "93.184.216.34"), "private", id="private-then-public"),
        pytest.param(("2606:2800:220:1::1", "::1"), "loopback", id="public-v6-and-loopback"),
        pytest.param(("93.184.216.34", "169.254.169.254"), "metadata", id="public-and-metadata"),
        pytest.param(("::ffff:169.254.169.254",), "metadata", id="mapped-metadata-record"),
        pytest.param(("64:ff9b::7f00:1",), "ipv4_mapped", id="nat64-loopback-record"),
        pytest.param(("0.0.0.0",), "unspecified", id="zero-address-record"),
    ],
)
async def test_a_name_with_any_forbidden_address_is_refused(
    fake_dns: dict[str, FakeInfos], answers: tuple[str, ...], reason: str
) -> None:
    fake_dns["rebind.example"] = infos(*answers)
    with pytest.raises(SSRFBlocked) as caught:
        await netguard.check_host("rebind.example", 443, Policy())
    assert (caught.value.reason, caught.value.host) == (reason, "rebind.example")


async def test_allowed_host_may_resolve_to_private_but_not_metadata(fake_dns: dict[str, FakeInfos]) -> None:
    fake_dns["internal.example"] = infos("10.0.0.7")
    [item] = await netguard.check_host("internal.example", 443, TRUSTED)
    assert item.address == ipaddress.IPv4Address("10.0.0.7")
    fake_dns["internal.example"] = infos("10.0.0.7", "169.254.169.254")
    with pytest.raises(SSRFBlocked) as caught:
        await netguard.check_host("internal.example", 443, TRUSTED)
    assert caught.value.reason == "metadata"


async def test_unknown_name_is_an_os_error(fake_dns: dict[str, FakeInfos]) -> None:
    with pytest.raises(socket.gaierror):
        await netguard.check_host("nowhere.example", 443, Policy())


async def test_slow_dns_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    never = asyncio.Event()

    async def hang(host: str, port: int, **kwargs: Any) -> FakeInfos:
        await never.wait()
        raise AssertionError("unreachable")

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", hang)
    with anyio.fail_after(BOUND), pytest.raises(TimeoutError):
        await netguard.check_host("slow.example", 443, Policy(), lookup_timeout=0.05)


async def test_port_out_of_range() -> None:
    with pytest.raises(ValueError, match="port"):
        await netguard.check_host("example.com", 70000, Policy())


# -- GuardedResolver through aiohttp -------------------------------------------------------------------


@asynccontextmanager
async def guarded(policy: Policy) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=netguard.connector(policy)) as session:
        yield session


async def test_resolver_returns_vetted_addresses() -> None:
    resolver = netguard.GuardedResolver(LOOPBACK_OK)
    [result] = await resolver.resolve("localhost", 8080, socket.AF_INET)
    assert (result["hostname"], result["host"], result["port"], result["family"]) == (
        "localhost",
        "127.0.0.1",
        8080,
        socket.AF_INET,
    )
    await resolver.close()


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("localhost", id="name-via-resolver"),
        pytest.param("127.0.0.1", id="v4-literal-via-socket-factory"),
        pytest.param("0x7f.1", id="shorthand-via-resolver"),
    ],
)
async def test_connections_are_refused_before_connect(host: str) -> None:
    with anyio.fail_after(BOUND):
        async with serve(hello) as served, guarded(Policy()) as session:
            with pytest.raises(SSRFBlocked):
                await session.get(f"http://{host}:{served.port}/")
    assert served.connections == 0


async def test_ipv6_loopback_literal_is_refused_before_connect() -> None:
    with anyio.fail_after(BOUND):
        async with guarded(Policy()) as session:
            with pytest.raises(SSRFBlocked) as caught:
                await session.get("http://[::1]:9/")
    assert caught.value.reason == "loopback"


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
async def test_allowed_loopback_connects(host: str) -> None:
    with anyio.fail_after(BOUND):
        async with serve(hello) as served, guarded(LOOPBACK_OK) as session:
            async with session.get(f"http://{host}:{served.port}/") as response:
                assert await response.text() == "hello"
    assert served.connections == 1


async def test_a_redirect_is_checked_like_any_connection() -> None:
    """``localhost`` is trusted by name; a redirect to another loopback address by IP literal is not, and is
    refused in the socket factory even though aiohttp never asks a resolver about literals."""

    async def redirect(request: web.BaseRequest) -> web.StreamResponse:
        if request.path == "/start":
            raise web.HTTPFound(f"http://127.0.0.2:{request.url.port}/secret")
        return web.Response(text="secret")

    with anyio.fail_after(BOUND):
        async with serve(redirect) as served, guarded(Policy(allowed_hosts=frozenset({"localhost"}))) as session:
            async with session.get(f"http://localhost:{served.port}/secret") as response:
                assert await response.text() == "secret"  # the trusted name itself is fine
            with pytest.raises(SSRFBlocked) as caught:
                await session.get(f"http://localhost:{served.port}/start")
    assert (caught.value.reason, str(caught.value.address)) == ("loopback", "127.0.0.2")
    assert served.paths == ["/secret", "/start"]
