"""``make_uvicorn_config``: the secure defaults, the context wiring, and a startup that fails closed."""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import MutableMapping
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from mcp_bastion.tls.certs import LocalPKI
from mcp_bastion.tls.context import server_context
from mcp_bastion.tls.h11_protocol import TLSH11Protocol
from mcp_bastion.tls.httptools_protocol import TLSHttpToolsProtocol
from mcp_bastion.tls.server import make_uvicorn_config

from .support import IO_TIMEOUT, client_context, echo_app, running_server


def test_defaults(pki: LocalPKI) -> None:
    ctx = server_context(pki.server_cert, pki.server_key)

    config = make_uvicorn_config(echo_app, "127.0.0.1", 8443, ctx)
    config.load()

    assert config.ssl is ctx
    assert isinstance(config.http, type)
    assert issubclass(config.http, TLSHttpToolsProtocol)
    assert (config.http.header_timeout, config.http.max_head_bytes) == (10.0, 16_384)
    assert config.loop == "uvloop"
    assert config.ws_protocol_class is None
    assert config.lifespan == "on"
    assert config.interface == "asgi3"
    assert not config.proxy_headers
    assert not isinstance(config.loaded_app, ProxyHeadersMiddleware)
    assert not config.server_header
    assert not config.date_header
    assert not config.access_log
    assert config.limit_concurrency == 1024
    assert config.timeout_keep_alive == 30
    assert config.h11_max_incomplete_event_size == 16_384


def test_limits_and_overrides(pki: LocalPKI) -> None:
    config = make_uvicorn_config(
        echo_app, "127.0.0.1", 0, None, header_timeout=2.5, max_head_bytes=8192, limit_concurrency=10, loop="asyncio"
    )
    config.load()

    assert config.ssl is None
    assert isinstance(config.http, type)
    assert issubclass(config.http, TLSHttpToolsProtocol)
    assert (config.http.header_timeout, config.http.max_head_bytes) == (2.5, 8192)
    # The configured subclass leaves the shared class untouched.
    assert TLSHttpToolsProtocol.header_timeout == 10.0
    assert config.h11_max_incomplete_event_size == 8192
    assert config.limit_concurrency == 10
    assert config.loop == "asyncio"


def test_h11_can_be_chosen() -> None:
    protocol = TLSH11Protocol.configured(header_timeout=None, max_head_bytes=4096)
    config = make_uvicorn_config(echo_app, "127.0.0.1", 0, None, http=protocol)

    assert config.http is protocol
    assert issubclass(protocol, TLSH11Protocol)
    assert (protocol.header_timeout, protocol.max_head_bytes) == (None, 4096)


def test_responses_carry_no_server_or_date_header(pki: LocalPKI) -> None:
    with running_server(server_context(pki.server_cert, pki.server_key)) as port:
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=client_context(pki.ca_cert), timeout=IO_TIMEOUT)
        try:
            conn.request("GET", "/")
            response = conn.getresponse()
            response.read()
        finally:
            conn.close()

    assert response.status == 200
    assert response.getheader("server") is None
    assert response.getheader("date") is None


def test_failing_startup_does_not_serve() -> None:
    async def broken_app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        await receive()
        raise RuntimeError("database unreachable")

    server = uvicorn.Server(make_uvicorn_config(broken_app, "127.0.0.1", 0, None))
    sock = socket.create_server(("127.0.0.1", 0))
    exit_codes: list[object] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except SystemExit as exc:  # how uvicorn ends a failed startup
            exit_codes.append(exc.code)

    thread = threading.Thread(target=run, daemon=True)
    try:
        thread.start()
        thread.join(IO_TIMEOUT)
    finally:
        sock.close()

    assert not thread.is_alive()
    assert exit_codes == [STARTUP_FAILURE]
    assert not server.started
