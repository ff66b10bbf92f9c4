"""Run a real gateway in-process on a real TLS socket for end-to-end tests.

The socket is bound first (port 0) so the resource URLs, and with them the token audiences, carry the
real port. The gateway serves from the test's event loop; clients connect over real HTTPS.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx2
import orjson
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from mcp_bastion.app import Gateway, build_gateway
from mcp_bastion.cli.serve import listener_context, make_server
from mcp_bastion.settings import parse_settings


@dataclass
class RunningGateway:
    gateway: Gateway
    base_url: str
    ca_file: Path | None
    audit_path: Path

    def url(self, server: str) -> str:
        return f"{self.base_url}/mcp/{server}"

    def token(self, subject: str = "alice", server: str = "up", **kw: object) -> str:
        issuer = self.gateway.local_issuer
        assert issuer is not None
        return issuer.mint(subject, self.url(server), **kw)  # type: ignore[arg-type]

    def client_ssl(self) -> ssl.SSLContext:
        assert self.ca_file is not None
        return ssl.create_default_context(cafile=str(self.ca_file))

    def http(self, token: str | None = None, **headers: str) -> httpx2.AsyncClient:
        all_headers = dict(headers)
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        verify: ssl.SSLContext | bool = self.client_ssl() if self.ca_file is not None else False
        return httpx2.AsyncClient(verify=verify, headers=all_headers, timeout=30)

    def audit(self) -> list[dict[str, object]]:
        if not self.audit_path.exists():
            return []
        return [orjson.loads(line) for line in self.audit_path.read_bytes().splitlines() if line]


@contextlib.asynccontextmanager
async def running_gateway(
    tmp_path: Path,
    upstreams: Mapping[str, Mapping[str, object]] | Callable[[str], Mapping[str, Mapping[str, object]]],
    *,
    extra_origins: Callable[[int], list[str]] | None = None,
    port: int = 0,
    **sections: Mapping[str, object],
) -> AsyncIterator[RunningGateway]:
    """A gateway on a fresh loopback port; ``extra_origins(port)`` adds allowed Origins that name the port;
    ``upstreams`` may be a function of the gateway's base URL (for settings that point back at it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    port = sock.getsockname()[1]
    server_section = {
        "host": "127.0.0.1",
        "port": port,
        "state_dir": str(tmp_path / "state"),
        **sections.pop("server", {}),
    }
    if extra_origins is not None:
        server_section["allowed_origins"] = extra_origins(port)
    if "policy" not in sections:
        # Tests of other features run under a policy that permits everything, without rate limits; the
        # policy and rate-limit tests pass their own ``policy`` section.
        allow_all = tmp_path / "allow-all.cedar"
        allow_all.write_text("permit(principal, action, resource);\n")
        no_limits = {"per_user": None, "per_client": None, "per_tool": None}
        sections["policy"] = {"files": [str(allow_all)], "rate_limits": no_limits}
    if callable(upstreams):
        upstreams = upstreams(f"https://127.0.0.1:{port}")
    settings = parse_settings({"server": server_section, "upstreams": dict(upstreams), **sections})
    try:
        context, pki = listener_context(settings)
        gateway = build_gateway(settings)
    except BaseException:
        sock.close()
        raise
    server = make_server(gateway, context)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        with anyio.fail_after(10):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        yield RunningGateway(
            gateway, settings.server.base_url, pki.ca_cert if pki else None, tmp_path / "state" / "audit.jsonl"
        )
    finally:
        server.should_exit = True
        with anyio.fail_after(15):
            await task
        sock.close()


@contextlib.asynccontextmanager
async def mcp_session(gw: RunningGateway, server: str, subject: str = "alice") -> AsyncIterator[Client]:
    """The real MCP client, signed in as ``subject``, on ``/mcp/<server>`` (legacy handshake)."""
    http = gw.http(gw.token(subject, server))
    async with http, Client(streamable_http_client(gw.url(server), http_client=http), mode="legacy") as session:
        yield session
