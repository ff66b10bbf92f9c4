"""Request-head guards of both protocol subclasses: the header timeout and the head-size limit.

The timeout is tested on real TLS sockets. The size limit is tested both on real sockets and by feeding
a protocol directly, because whether a 64 KB head reaches the parser in one read or several depends on
the kernel and the TLS layer, and each case takes a different path.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import ssl
import time
from typing import Any

import pytest
from uvicorn.server import ServerState

from mcp_bastion.tls.certs import LocalPKI
from mcp_bastion.tls.context import server_context
from mcp_bastion.tls.h11_protocol import TLSH11Protocol
from mcp_bastion.tls.httptools_protocol import TLSHttpToolsProtocol
from mcp_bastion.tls.server import make_uvicorn_config

from .support import (
    FLAVOURS,
    IO_TIMEOUT,
    Flavour,
    client_context,
    echo_app,
    read_until_closed,
    running_server,
    tls_socket,
)

HEADER_TIMEOUT = 0.5


def _closed(sock: ssl.SSLSocket) -> bool:
    """Whether the server has closed or reset the connection (waits at most 0.1 s)."""
    sock.settimeout(0.1)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except (ConnectionError, ssl.SSLError):
        return True


# --- header timeout -----------------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_slowloris_head_is_dropped(pki: LocalPKI, flavour: Flavour) -> None:
    head = b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 200
    server = server_context(pki.server_cert, pki.server_key)

    with (
        running_server(server, flavour=flavour, header_timeout=HEADER_TIMEOUT) as port,
        tls_socket(port, client_context(pki.ca_cert)) as sock,
    ):
        # A byte every ~0.1 s: never idle as long as the timeout, so only a deadline on the whole
        # head (not an inactivity timer) can drop it. At most ~6 s before the test gives up.
        for index in range(len(head)):
            try:
                sock.sendall(head[index : index + 1])
            except (ConnectionError, ssl.SSLError):
                break
            if _closed(sock):
                break
        else:
            pytest.fail("connection still open after the whole slow head")

    assert index < len(head) - 1


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_silent_client_is_dropped(pki: LocalPKI, flavour: Flavour) -> None:
    server = server_context(pki.server_cert, pki.server_key)

    with (
        running_server(server, flavour=flavour, header_timeout=HEADER_TIMEOUT) as port,
        tls_socket(port, client_context(pki.ca_cert)) as sock,
    ):
        assert read_until_closed(sock) == b""  # bounded by the socket timeout (IO_TIMEOUT)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_timeout_spares_slow_responses_and_idle_keep_alive(pki: LocalPKI, flavour: Flavour) -> None:
    server = server_context(pki.server_cert, pki.server_key)

    with running_server(server, flavour=flavour, header_timeout=HEADER_TIMEOUT) as port:
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=client_context(pki.ca_cert), timeout=IO_TIMEOUT)
        try:
            # The app takes longer than the header timeout: the head was complete, so no cut.
            conn.request("GET", f"/slow?{HEADER_TIMEOUT * 2}")
            assert conn.getresponse().read()
            first_socket = conn.sock
            # Idle between requests is the keep-alive timer's business, not the header timeout's.
            time.sleep(HEADER_TIMEOUT * 2)
            conn.request("GET", "/")
            response = conn.getresponse()
            assert response.status == 200
            assert json.loads(response.read())["echo"]
            assert conn.sock is first_socket
        finally:
            conn.close()


# --- head size, over real sockets ---------------------------------------------------------------------


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("complete", [True, False], ids=["complete", "unterminated"])
def test_oversized_head_is_refused(pki: LocalPKI, flavour: Flavour, complete: bool) -> None:
    head = b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 65536 + (b"\r\n\r\n" if complete else b"")
    server = server_context(pki.server_cert, pki.server_key)

    with running_server(server, flavour=flavour) as port, tls_socket(port, client_context(pki.ca_cert)) as sock:
        # The server may close while we are still sending: that is a refusal too.
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            sock.sendall(head)
        answer = read_until_closed(sock)

    assert answer == b"" or answer.startswith((b"HTTP/1.1 400", b"HTTP/1.1 431"))
    assert b"echo" not in answer


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_large_but_allowed_head_is_served(pki: LocalPKI, flavour: Flavour) -> None:
    server = server_context(pki.server_cert, pki.server_key)

    with running_server(server, flavour=flavour) as port:
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=client_context(pki.ca_cert), timeout=IO_TIMEOUT)
        try:
            # A big bearer token: 12 KB, under the 16 KB limit.
            conn.request("GET", "/", headers={"Authorization": "Bearer " + "t" * 12_000})
            assert conn.getresponse().status == 200
        finally:
            conn.close()


# --- head size, fed to the protocol directly ----------------------------------------------------------


class FakeTransport(asyncio.Transport):
    """Records what the protocol writes and whether it closed."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8443)}.get(name, default)


PROTOCOLS = [pytest.param(TLSHttpToolsProtocol, id="httptools"), pytest.param(TLSH11Protocol, id="h11")]


async def _feed(
    protocol_class: type[TLSH11Protocol | TLSHttpToolsProtocol], chunks: list[bytes]
) -> tuple[bytes, bool, int]:
    """Feed ``chunks`` to a fresh connection; returns (bytes written, closed, app calls)."""
    calls = 0

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal calls
        calls += 1
        await echo_app(scope, receive, send)

    config = make_uvicorn_config(app, "127.0.0.1", 0, None, http=protocol_class, lifespan="off")
    config.load()
    protocol = protocol_class(config, ServerState(), {}, asyncio.get_running_loop())
    transport = FakeTransport()
    protocol.connection_made(transport)
    for chunk in chunks:
        if transport.is_closing():
            break
        protocol.data_received(chunk)
    await asyncio.sleep(0.01)  # let a request task, if one was started, run
    protocol.connection_lost(None)
    return bytes(transport.written), transport.is_closing(), calls


def _head(*, header_bytes: int, count: int = 1) -> bytes:
    fields = b"".join(b"X-F%d: %s\r\n" % (i, b"v" * header_bytes) for i in range(count))
    return b"GET / HTTP/1.1\r\nHost: localhost\r\n" + fields + b"\r\n"


@pytest.mark.anyio
@pytest.mark.parametrize("protocol_class", PROTOCOLS)
@pytest.mark.parametrize(
    "chunks",
    [
        pytest.param([_head(header_bytes=65536)], id="one-big-field-one-read"),
        pytest.param([_head(header_bytes=100, count=300)], id="many-fields-one-read"),
        pytest.param([_head(header_bytes=65536)[:-4]], id="unterminated"),
        pytest.param([_head(header_bytes=65536)[i : i + 1000] for i in range(0, 66000, 1000)], id="many-reads"),
    ],
)
async def test_oversized_head_never_reaches_the_app(
    protocol_class: type[TLSH11Protocol | TLSHttpToolsProtocol], chunks: list[bytes]
) -> None:
    written, closed, calls = await _feed(protocol_class, chunks)

    assert written.startswith(b"HTTP/1.1 400")
    assert closed
    assert calls == 0


@pytest.mark.anyio
@pytest.mark.parametrize("protocol_class", PROTOCOLS)
async def test_head_under_the_limit_reaches_the_app(
    protocol_class: type[TLSH11Protocol | TLSHttpToolsProtocol],
) -> None:
    written, _, calls = await _feed(protocol_class, [_head(header_bytes=100, count=100)])

    assert written.startswith(b"HTTP/1.1 200")
    assert calls == 1
