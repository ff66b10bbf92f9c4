"""The egress proxy (``sandbox/egress.py``) in process: real origin servers on 127.0.0.1 (opened by an
``allowed_networks`` entry, refused by default), a client on the proxy's Unix socket, and a fake DNS on the
running loop for names. Every test also checks the audit record of each decision."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import stat
from pathlib import Path
from typing import Any

import anyio
import pytest
import trustme

from mcp_bastion.errors import ConfigError
from mcp_bastion.jsonrpc.message import JSONObject
from mcp_bastion.sandbox import egress
from mcp_bastion.sandbox.egress import EgressProxy
from mcp_bastion.sandbox.egressrules import EgressLimits
from tests.sandbox.egress_fixtures import (
    BOUND,
    LOCAL,
    FakeDNS,
    anyio_backend,  # noqa: F401 -- the fixture: every test here runs on asyncio and on uvloop
    ask,
    echo_server,
    expect,
    free_port,
    install,
    origin_server,
    proxied_echo,
    proxied_origin,
    running,
    status,
)

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"name": "../up"}, id="name-path"),
        pytest.param({"name": ""}, id="name-empty"),
        pytest.param({"allowed_networks": ["10.0.0.1/8"]}, id="network-host-bits"),
        pytest.param({"allowed_networks": ["nonsense"]}, id="network-malformed"),
        pytest.param({"state_dir": Path("/" + "x" * 120)}, id="socket-path-too-long"),
    ],
)
def test_constructor_refuses_bad_settings(options: dict[str, Any], tmp_path: Path) -> None:
    arguments: dict[str, Any] = {"name": "srv", "state_dir": tmp_path} | options
    with pytest.raises(ConfigError):
        EgressProxy(arguments.pop("name"), ["example.com:443"], None, arguments.pop("state_dir"), **arguments)


# -- the socket -----------------------------------------------------------------------------------------


async def test_socket_is_private_and_removed_on_close(tmp_path: Path) -> None:
    stale = tmp_path / "egress" / "srv.sock"
    async with running(tmp_path, []) as (proxy, _):
        assert proxy.socket_path() == stale
        assert stat.S_ISSOCK(stale.lstat().st_mode)
        assert stat.S_IMODE(stale.lstat().st_mode) == 0o600
        assert stat.S_IMODE(stale.parent.lstat().st_mode) == 0o700
    assert not stale.exists()
    stale.touch()
    with pytest.raises(ConfigError):
        await EgressProxy("srv", [], None, tmp_path).start()


# -- plain HTTP -----------------------------------------------------------------------------------------


async def test_plain_http_reaches_an_allowed_origin_without_proxy_fields(tmp_path: Path) -> None:
    async with proxied_origin(tmp_path) as (origin, proxy, audit):
        authority = b"127.0.0.1:%d" % origin.port
        response = await ask(
            proxy,
            b"GET http://%b/hello?x=1 HTTP/1.1\r\nHost: %b\r\nProxy-Authorization: Basic c2VjcmV0\r\n"
            b"Proxy-Connection: keep-alive\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\nKeep-Alive: 5\r\n"
            b"TE: trailers\r\nUpgrade: h2c\r\nX-Keep: 2\r\n\r\n" % (authority, authority),
        )
        seen = await origin.next()
        [record] = await audit.wait()
    assert status(response) == 200
    assert response.endswith(b"saw GET /hello?x=1 HTTP/1.1")
    assert seen.request_line == b"GET /hello?x=1 HTTP/1.1"
    assert seen.header("host") == [authority.decode()]
    assert seen.header("x-keep") == ["2"]
    assert seen.header("connection") == ["close"]
    for dropped in ("proxy-authorization", "proxy-connection", "x-drop", "keep-alive", "te", "upgrade"):
        assert seen.header(dropped) == [], dropped
    expect(
        record,
        method="GET",
        host="127.0.0.1",
        port=origin.port,
        address="127.0.0.1",
        decision="allow",
        reason="ok",
        status=200,
        end="closed",
        bytes_down=len(response),
    )
    assert record["bytes_up"] == len(seen.head)


async def test_loopback_is_refused_by_default(tmp_path: Path) -> None:
    async with origin_server() as origin, running(tmp_path, [f"127.0.0.1:{origin.port}"]) as (proxy, audit):
        response = await ask(proxy, b"GET http://127.0.0.1:%d/ HTTP/1.1\r\n\r\n" % origin.port)
        [record] = await audit.wait()
        assert origin.seen.empty()
    assert status(response) == 403
    assert b"address_loopback" in response
    assert b"error=destination_ip_prohibited" in response
    expect(record, decision="deny", reason="address_loopback", status=403, address="127.0.0.1", bytes_up=0)


@pytest.mark.parametrize(
    ("framing", "body"),
    [
        pytest.param(b"Content-Length: 11\r\n", b"hello world", id="content-length"),
        pytest.param(b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", id="chunked"),
    ],
)
async def test_body_is_forwarded_and_nothing_after_it(tmp_path: Path, framing: bytes, body: bytes) -> None:
    async with proxied_origin(tmp_path) as (origin, proxy, audit):
        url = b"http://127.0.0.1:%d" % origin.port
        smuggled = b"GET %b/second HTTP/1.1\r\nHost: evil.test\r\n\r\n" % url
        response = await ask(proxy, b"POST %b/first HTTP/1.1\r\n%b\r\n%b%b" % (url, framing, body, smuggled))
        seen = await origin.next()
        [record] = await audit.wait()
    assert status(response) == 200
    assert seen.request_line == b"POST /first HTTP/1.1"
    assert seen.body == b"hello world"
    assert seen.extra == b""  # the pipelined request never left the proxy
    assert origin.seen.empty()
    expect(record, decision="allow", method="POST")


@pytest.mark.parametrize(
    ("host_fields", "code", "reason"),
    [
        pytest.param(b"Host: evil.test\r\n", 403, "host_header_mismatch", id="other-host"),
        pytest.param(b"Host: 127.0.0.1\r\n", 403, "host_header_mismatch", id="other-port"),
        pytest.param(b"Host: 127.0.0.1:1\r\n", 403, "host_header_mismatch", id="explicit-other-port"),
        pytest.param(b"Host: 127.0.0.1:{port}\r\nHost: evil.test\r\n", 400, "bad_request", id="two-hosts"),
        pytest.param(b"Host: \r\n", 403, "host_header_mismatch", id="empty"),
    ],
)
async def test_host_field_must_agree_with_the_url(tmp_path: Path, host_fields: bytes, code: int, reason: str) -> None:
    async with proxied_origin(tmp_path) as (origin, proxy, audit):
        fields = host_fields.replace(b"{port}", b"%d" % origin.port)
        response = await ask(proxy, b"GET http://127.0.0.1:%d/ HTTP/1.1\r\n%b\r\n" % (origin.port, fields))
        [record] = await audit.wait()
        assert origin.seen.empty()
    assert status(response) == code
    expect(record, decision="deny", reason=reason, status=code, address=None)


async def test_missing_host_field_is_added(tmp_path: Path) -> None:
    async with proxied_origin(tmp_path) as (origin, proxy, audit):
        response = await ask(proxy, b"GET http://127.0.0.1:%d HTTP/1.0\r\n\r\n" % origin.port)
        seen = await origin.next()
        await audit.wait()
    assert status(response) == 200
    assert seen.request_line == b"GET / HTTP/1.0"
    assert seen.header("host") == [f"127.0.0.1:{origin.port}"]


@pytest.mark.parametrize(
    ("request_bytes", "code", "reason"),
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_request", id="origin-form"),
        pytest.param(b"GET https://{a}/ HTTP/1.1\r\n\r\n", 403, "scheme_not_supported", id="https-absolute"),
        pytest.param(b"GET ftp://{a}/ HTTP/1.1\r\n\r\n", 403, "scheme_not_supported", id="ftp"),
        pytest.param(b"GET http://user:pw@{a}/ HTTP/1.1\r\n\r\n", 400, "bad_request", id="userinfo"),
        pytest.param(b"CONNECT user@{a} HTTP/1.1\r\n\r\n", 400, "bad_request", id="connect-userinfo"),
        pytest.param(b"CONNECT 127.0.0.1 HTTP/1.1\r\n\r\n", 400, "bad_request", id="connect-no-port"),
        pytest.param(b"CONNECT 127.0.0.1:0 HTTP/1.1\r\n\r\n", 400, "bad_request", id="connect-port-zero"),
        pytest.param(
            b"GET http://{a}/ HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            403,
            "upgrade_not_supported",
            id="websocket",
        ),
        pytest.param(
            b"POST http://{a}/ HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
            "bad_request",
            id="length-and-chunked",
        ),
        pytest.param(
            b"POST http://{a}/ HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            400,
            "bad_request",
            id="coded-chunked",
        ),
        pytest.param(
            b"POST http://{a}/ HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            400,
            "bad_request",
            id="two-lengths",
        ),
        pytest.param(b"GET http://{a}/ HTTP/1.1\r\nX: a\r\n b\r\n\r\n", 400, "bad_request", id="obs-fold"),
        pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400, "bad_request", id="tls-hello"),
        pytest.param(b"GET http://{a}/ HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n", 431, "headers_too_large"),
        pytest.param(b"GET http://{a}/ HTTP/1.1\r\n" + b"X: a\r\n" * 101 + b"\r\n", 431, "headers_too_large"),
    ],
)
async def test_malformed_requests_are_refused(tmp_path: Path, request_bytes: bytes, code: int, reason: str) -> None:
    async with proxied_origin(tmp_path) as (origin, proxy, audit):
        response = await ask(proxy, request_bytes.replace(b"{a}", b"127.0.0.1:%d" % origin.port))
        [record] = await audit.wait()
        assert origin.seen.empty()
    assert status(response) == code
    assert reason.encode() in response
    expect(record, decision="deny", reason=reason, status=code)


# -- CONNECT --------------------------------------------------------------------------------------------


async def test_connect_tunnels_tls_to_an_allowed_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("origin.test").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    dns = install(FakeDNS({"origin.test": [["127.0.0.1"]]}), monkeypatch)
    async with (
        origin_server(tls=server_context) as origin,
        running(tmp_path, [f"origin.test:{origin.port}"], allowed_networks=LOCAL) as (proxy, audit),
    ):
        with anyio.fail_after(BOUND):
            reader, writer = await asyncio.open_unix_connection(proxy.socket_path())
            writer.write(
                b"CONNECT origin.test:%d HTTP/1.1\r\nHost: origin.test:%d\r\n\r\n" % (origin.port, origin.port)
            )
            assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 200 Connection established\r\n\r\n"
            await writer.start_tls(client_context, server_hostname="origin.test")
            writer.write(b"GET /over-tls HTTP/1.1\r\nHost: origin.test\r\n\r\n")
            answer = await reader.read(-1)
            writer.close()
        seen = await origin.next()
        [record] = await audit.wait()
    assert answer.endswith(b"saw GET /over-tls HTTP/1.1")
    assert seen.peer == "127.0.0.1"
    assert dns.calls == ["origin.test"]
    expect(record, method="CONNECT", host="origin.test", address="127.0.0.1", decision="allow", status=200)
    assert isinstance(record["bytes_up"], int)
    assert record["bytes_up"] > len(b"GET /over-tls")
    assert isinstance(record["bytes_down"], int)
    assert record["bytes_down"] > len(answer)


async def test_connect_forwards_bytes_sent_with_the_head(tmp_path: Path) -> None:
    async with proxied_echo(tmp_path) as (port, proxy, audit):
        with anyio.fail_after(BOUND):
            reader, writer = await asyncio.open_unix_connection(proxy.socket_path())
            writer.write(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\nearly" % port)
            await reader.readuntil(b"\r\n\r\n")
            assert await reader.readexactly(5) == b"early"
            writer.write_eof()
            assert await reader.read(-1) == b""
            writer.close()
        [record] = await audit.wait()
    expect(record, decision="allow", end="closed", bytes_up=5, bytes_down=5, address="127.0.0.1")


async def test_idle_tunnel_is_closed(tmp_path: Path) -> None:
    limits = EgressLimits(idle_timeout=0.2)
    async with proxied_echo(tmp_path, limits=limits) as (port, proxy, audit):
        with anyio.fail_after(BOUND):
            reader, writer = await asyncio.open_unix_connection(proxy.socket_path())
            writer.write(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\nping" % port)
            await reader.readuntil(b"\r\n\r\n")
            assert await reader.read(-1) == b"ping"  # then silence, until the proxy gives up
            writer.close()
        [record] = await audit.wait()
    expect(record, decision="allow", end="idle_timeout", bytes_up=4, bytes_down=4)


async def test_host_not_on_the_list_is_refused_before_any_lookup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dns = install(FakeDNS({"evil.test": [["93.184.215.14"]]}), monkeypatch)
    async with running(tmp_path, ["api.example.com:443", "*.allowed.test:443"]) as (proxy, audit):
        refused = [
            await ask(proxy, b"CONNECT evil.test:443 HTTP/1.1\r\n\r\n"),
            await ask(proxy, b"CONNECT api.example.com:8443 HTTP/1.1\r\n\r\n"),
            await ask(proxy, b"CONNECT allowed.test:443 HTTP/1.1\r\n\r\n"),
            await ask(proxy, b"GET http://evil.test/ HTTP/1.1\r\nHost: evil.test\r\n\r\n"),
        ]
        records = await audit.wait(4)
    assert [status(response) for response in refused] == [403] * 4
    assert all(b"host_not_allowed" in response for response in refused)
    assert dns.calls == []  # a name not on the list is never resolved: DNS carries nothing out
    assert [(r["host"], r["port"], r["reason"], r["decision"]) for r in records] == [
        ("evil.test", 443, "host_not_allowed", "deny"),
        ("api.example.com", 8443, "host_not_allowed", "deny"),
        ("allowed.test", 443, "host_not_allowed", "deny"),
        ("evil.test", 80, "host_not_allowed", "deny"),
    ]


@pytest.mark.parametrize(
    ("addresses", "reason", "address"),
    [
        pytest.param(["169.254.169.254"], "address_metadata", "169.254.169.254", id="metadata"),
        pytest.param(["fd00:ec2::254"], "address_metadata", "fd00:ec2::254", id="metadata-v6"),
        pytest.param(["10.1.2.3"], "address_private", "10.1.2.3", id="rfc1918"),
        pytest.param(["100.64.0.1"], "address_cgnat", "100.64.0.1", id="cgnat"),
        pytest.param(["169.254.1.1"], "address_link_local", "169.254.1.1", id="link-local"),
        pytest.param(["::1"], "address_loopback", "::1", id="loopback-v6"),
        pytest.param(["::ffff:10.0.0.1"], "address_ipv4_mapped", "::ffff:a00:1", id="mapped"),
        pytest.param(["127.0.0.1", "10.0.0.1"], "address_private", "10.0.0.1", id="one-bad-of-two"),
    ],
)
async def test_name_resolving_to_an_internal_address_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, addresses: list[str], reason: str, address: str
) -> None:
    dns = install(FakeDNS({"internal.test": [addresses]}), monkeypatch)
    async with running(tmp_path, ["internal.test:443"], allowed_networks=LOCAL) as (proxy, audit):
        response = await ask(proxy, b"CONNECT internal.test:443 HTTP/1.1\r\n\r\n")
        [record] = await audit.wait()
    assert status(response) == 403
    assert address.encode() not in response  # where a name points is for the audit log
    assert dns.calls == ["internal.test"]
    expect(record, decision="deny", reason=reason, address=address, host="internal.test")


def test_allow_private_opens_private_space_but_never_metadata(tmp_path: Path) -> None:
    proxy = EgressProxy("srv", [], None, tmp_path, allow_private=True)
    assert proxy.policy.refusal(ipaddress.ip_address("10.1.2.3")) is None
    assert proxy.policy.refusal(ipaddress.ip_address("169.254.169.254")) == "metadata"
    assert proxy.policy.refusal(ipaddress.ip_address("127.0.0.1")) == "loopback"


@pytest.mark.parametrize("form", ["connect", "absolute"])
async def test_dns_rebinding_connects_to_the_vetted_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    # The first answer is vetted; every later lookup would say 169.254.169.254.
    dns = install(FakeDNS({"rebind.test": [["127.0.0.1"], ["169.254.169.254"]]}), monkeypatch)
    async with (
        origin_server() as origin,
        running(tmp_path, [f"rebind.test:{origin.port}"], allowed_networks=LOCAL) as (proxy, audit),
    ):
        authority = b"rebind.test:%d" % origin.port
        if form == "connect":
            with anyio.fail_after(BOUND):
                reader, writer = await asyncio.open_unix_connection(proxy.socket_path())
                writer.write(b"CONNECT %b HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nHost: %b\r\n\r\n" % (authority, authority))
                response = await reader.read(-1)
                writer.close()
        else:
            response = await ask(proxy, b"GET http://%b/ HTTP/1.1\r\nHost: %b\r\n\r\n" % (authority, authority))
        seen = await origin.next()
        [record] = await audit.wait()
    assert response.endswith(b"saw GET / HTTP/1.1")
    assert seen.peer == "127.0.0.1"
    assert dns.calls == ["rebind.test"]  # resolved once, connected to what was vetted
    expect(record, decision="allow", address="127.0.0.1", host="rebind.test")


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        pytest.param("2130706433", "ip_literal_noncanonical", id="decimal"),
        pytest.param("0x7f000001", "ip_literal_noncanonical", id="hex"),
        pytest.param("0177.0.0.1", "ip_literal_noncanonical", id="octal"),
        pytest.param("127.1", "ip_literal_noncanonical", id="short"),
        pytest.param("127.0.0.1.", "ip_literal_noncanonical", id="trailing-dot"),
        pytest.param("[::ffff:127.0.0.1]", "host_not_allowed", id="ipv4-mapped"),
        pytest.param("[::ffff:7f00:1]", "host_not_allowed", id="ipv4-mapped-hex"),
        pytest.param("[64:ff9b::7f00:1]", "host_not_allowed", id="nat64"),
        pytest.param("[::1]", "host_not_allowed", id="ipv6-loopback"),
        pytest.param("[::127.0.0.1]", "host_not_allowed", id="ipv4-compatible"),
    ],
)
@pytest.mark.parametrize("form", ["connect", "absolute"])
async def test_ip_literal_tricks_are_refused(tmp_path: Path, host: str, reason: str, form: str) -> None:
    async with proxied_origin(tmp_path) as (origin, proxy, audit):
        authority = f"{host}:{origin.port}".encode()
        if form == "connect":
            response = await ask(proxy, b"CONNECT %b HTTP/1.1\r\n\r\n" % authority)
        else:
            response = await ask(proxy, b"GET http://%b/ HTTP/1.1\r\nHost: %b\r\n\r\n" % (authority, authority))
        [record] = await audit.wait()
        assert origin.seen.empty()
    assert status(response) == 403
    expect(record, decision="deny", reason=reason, address=None, port=origin.port)


async def test_a_listed_mapped_literal_is_still_vetted(tmp_path: Path) -> None:
    port = free_port()
    async with running(tmp_path, [f"[::ffff:127.0.0.1]:{port}"], allowed_networks=LOCAL) as (proxy, audit):
        response = await ask(proxy, b"CONNECT [::ffff:127.0.0.1]:%d HTTP/1.1\r\n\r\n" % port)
        [record] = await audit.wait()
    assert status(response) == 403
    expect(record, decision="deny", reason="address_ipv4_mapped", address="::ffff:7f00:1")


# -- failures and limits --------------------------------------------------------------------------------


async def test_unreachable_and_unresolvable_origins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install(FakeDNS({}), monkeypatch)
    port = free_port()
    async with running(tmp_path, [f"127.0.0.1:{port}", "nxdomain.test:443"], allowed_networks=LOCAL) as (
        proxy,
        audit,
    ):
        closed = await ask(proxy, b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n" % port)
        unknown = await ask(proxy, b"CONNECT nxdomain.test:443 HTTP/1.1\r\n\r\n")
        records = await audit.wait(2)
    assert (status(closed), status(unknown)) == (502, 502)
    assert b"error=connection_refused" in closed
    assert b"error=dns_error" in unknown
    expect(records[0], decision="error", reason="connect_failed", address="127.0.0.1", status=502)
    expect(records[1], decision="error", reason="resolve_failed", address=None, status=502)


async def test_a_lookup_with_no_address_is_refused_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # netguard.check_host raises rather than return nothing; if it ever did, the refusal must still say why.
    async def nothing(*_: object, **__: object) -> list[object]:
        return []

    monkeypatch.setattr(egress, "check_host", nothing)
    async with running(tmp_path, ["empty.test:443"]) as (proxy, audit):
        response = await ask(proxy, b"CONNECT empty.test:443 HTTP/1.1\r\n\r\n")
        [record] = await audit.wait()
    assert status(response) == 502
    assert b"error=dns_error" in response
    expect(record, decision="error", reason="resolve_failed", address=None, host="empty.test", status=502)
    assert record["detail"] == "'empty.test' resolved to no address"


async def test_slow_head_times_out(tmp_path: Path) -> None:
    async with running(tmp_path, [], limits=EgressLimits(head_timeout=0.1)) as (proxy, audit):
        with anyio.fail_after(BOUND):
            reader, writer = await asyncio.open_unix_connection(proxy.socket_path())
            writer.write(b"GET http://exam")
            response = await reader.read(-1)
            writer.close()
        [record] = await audit.wait()
    assert status(response) == 408
    expect(record, decision="deny", reason="head_timeout", status=408)


async def test_connections_are_capped(tmp_path: Path) -> None:
    limits = EgressLimits(max_connections=1)
    async with proxied_echo(tmp_path, limits=limits) as (port, proxy, audit):
        with anyio.fail_after(BOUND):
            reader, writer = await asyncio.open_unix_connection(proxy.socket_path())
            writer.write(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n" % port)
            await reader.readuntil(b"\r\n\r\n")
            second = await ask(proxy, b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n" % port)
            [refused] = await audit.wait()
            writer.close()
        first = (await audit.wait(2))[1]
    assert status(second) == 503
    expect(refused, decision="error", reason="too_many_connections", status=503)
    expect(first, decision="allow", reason="ok")


async def test_close_ends_open_tunnels_and_audits_them(tmp_path: Path) -> None:
    async with echo_server() as port:
        async with running(tmp_path, [f"127.0.0.1:{port}"], allowed_networks=LOCAL) as (proxy, audit):
            reader, writer = await asyncio.open_unix_connection(proxy.socket_path())
            writer.write(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n" % port)
            with anyio.fail_after(BOUND):
                await reader.readuntil(b"\r\n\r\n")
        with anyio.fail_after(BOUND):
            assert await reader.read(-1) == b""
        writer.close()
    [record] = audit.records
    expect(record, decision="allow", end="proxy_closed")


async def test_probes_are_not_audited_and_a_failing_sink_does_not_stop_the_proxy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(record: JSONObject) -> None:
        raise RuntimeError("disk full")

    proxy = EgressProxy("srv", [], broken, tmp_path)
    await proxy.start()
    try:
        with anyio.fail_after(BOUND):
            _, writer = await asyncio.open_unix_connection(proxy.socket_path())
            writer.close()  # what the launcher's readiness probe does
            response = await ask(proxy, b"CONNECT evil.test:443 HTTP/1.1\r\n\r\n")
    finally:
        await proxy.aclose()
    assert status(response) == 403
    failures = [r for r in caplog.records if "audit sink failed" in r.getMessage()]
    assert len(failures) == 1
