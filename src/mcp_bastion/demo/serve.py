"""The command line the demo servers share: serve one `mcp` low-level `Server` over stdio or Streamable HTTP.

    python -m mcp_bastion.demo.<name> --stdio
    python -m mcp_bastion.demo.<name> --http [--host 127.0.0.1] [--port 0] [--json-response] [--stateless]

Over HTTP the endpoint is `/mcp`. The socket is bound before the server starts, so `--port 0` lets the
kernel choose a free port (no race between picking a port and binding it), and `READY <url>` is printed
on stdout only once the app's lifespan has started and the socket is listening: whoever launched the
process (tests, benchmarks, the demo command) connects as soon as that line appears. `--json-response`
answers each POST with one JSON body instead of an SSE stream (notifications sent during a request, such
as progress, are then not delivered); `--stateless` issues no `Mcp-Session-Id` and serves every POST on
a fresh transport.
"""

from __future__ import annotations

import argparse
import importlib.util
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

import anyio
import uvicorn
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

MCP_PATH: Final = "/mcp"

GRACEFUL_SHUTDOWN_SECONDS: Final = 2
"""How long uvicorn waits for open connections (SSE streams) after SIGTERM before closing them."""


@dataclass(frozen=True)
class TLSFiles:
    """HTTPS for the demo server (tests use it as a TLS upstream, optionally requiring client certificates)."""

    cert: str
    key: str
    client_ca: str | None = None


class _AnnouncingServer(uvicorn.Server):
    """A uvicorn server that prints `READY <url>` once it accepts connections."""

    def __init__(self, config: uvicorn.Config, url: str) -> None:
        super().__init__(config)
        self._url = url

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # `started` stays False when the lifespan failed; then uvicorn exits and nobody must connect.
        if self.started:
            print(f"READY {self._url}", flush=True)


async def serve_stdio(server: Server[Any]) -> None:
    """Serve one connection on this process's stdin/stdout until the peer closes it."""
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


async def serve_http(
    server: Server[Any],
    *,
    host: str,
    port: int,
    json_response: bool = False,
    stateless: bool = False,
    tls: TLSFiles | None = None,
) -> None:
    """Serve Streamable HTTP at `http(s)://host:port/mcp` until SIGINT/SIGTERM; announce `READY <url>`."""
    # Passing `host` lets the SDK turn on its Host/Origin allow-list (DNS-rebinding protection) on loopback.
    app = server.streamable_http_app(
        streamable_http_path=MCP_PATH, json_response=json_response, stateless_http=stateless, host=host
    )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.create_server((host, port), family=family) as sock:
        netloc = f"[{host}]" if family == socket.AF_INET6 else host
        scheme = "https" if tls is not None else "http"
        url = f"{scheme}://{netloc}:{sock.getsockname()[1]}{MCP_PATH}"
        ssl_options: dict[str, Any] = {}
        if tls is not None:
            ssl_options = {"ssl_certfile": tls.cert, "ssl_keyfile": tls.key}
            if tls.client_ca is not None:  # mutual TLS: the caller (the gateway) must show a certificate
                ssl_options |= {"ssl_ca_certs": tls.client_ca, "ssl_cert_reqs": ssl.CERT_REQUIRED}
        config = uvicorn.Config(
            app, log_level="warning", timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS, **ssl_options
        )
        await _AnnouncingServer(config, url).serve(sockets=[sock])


def _parse(prog: str, argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog)
    transport = parser.add_mutually_exclusive_group(required=True)
    transport.add_argument("--stdio", action="store_true", help="serve one client on stdin/stdout")
    transport.add_argument("--http", action="store_true", help="serve Streamable HTTP at /mcp")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind with --http (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind with --http (default 0: any free)")
    parser.add_argument("--json-response", action="store_true", help="answer POSTs with JSON instead of SSE")
    parser.add_argument("--stateless", action="store_true", help="no sessions: a fresh transport per POST")
    parser.add_argument("--tls-cert", help="serve HTTPS with this certificate chain (PEM)")
    parser.add_argument("--tls-key", help="the certificate's private key (PEM)")
    parser.add_argument("--tls-client-ca", help="require client certificates issued by this CA (PEM)")
    args = parser.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key) or (args.tls_client_ca and not args.tls_cert):
        parser.error("--tls-cert and --tls-key go together; --tls-client-ca needs them")
    if args.stdio and (args.json_response or args.stateless):
        parser.error("--json-response and --stateless apply only to --http")
    return args


def main(server: Server[Any], prog: str, argv: Sequence[str] | None = None) -> None:
    """Parse the command line and serve `server` until the client or a signal ends it."""
    args = _parse(prog, argv)
    if args.stdio:
        serve = partial(serve_stdio, server)
    else:
        serve = partial(
            serve_http,
            server,
            host=args.host,
            port=args.port,
            json_response=args.json_response,
            stateless=args.stateless,
            tls=TLSFiles(args.tls_cert, args.tls_key, args.tls_client_ca) if args.tls_cert else None,
        )
    # uvloop comes with uvicorn[standard] (not on Windows); it makes the benchmark's baseline upstream cheaper.
    use_uvloop = importlib.util.find_spec("uvloop") is not None
    anyio.run(serve, backend_options={"use_uvloop": use_uvloop})
