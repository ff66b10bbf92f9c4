"""No token passthrough: whatever credential the client presents stays at the gateway.

The upstream here is the real demo server wrapped in a recorder of every request header it receives.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, MutableMapping
from pathlib import Path
from typing import Any

import anyio
import pytest
import uvicorn
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from mcp_bastion.demo.customers import build_server
from tests.e2e.gateway import running_gateway

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


@contextlib.asynccontextmanager
async def recording_upstream() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []
    inner = build_server().streamable_http_app(streamable_http_path="/mcp", host="127.0.0.1")

    async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append({k.decode().lower(): v.decode() for k, v in scope["headers"]})
        await inner(scope, receive, send)

    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        with anyio.fail_after(10):
            while not server.started:
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/mcp", seen
    finally:
        server.should_exit = True
        with anyio.fail_after(10):
            await task
        sock.close()


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_client_credentials_never_reach_the_upstream(tmp_path: Path, mode: str) -> None:
    async with recording_upstream() as (url, seen):
        async with running_gateway(tmp_path, {"up": {"url": url, "allow_insecure_http": True}}) as gw:
            token = gw.token("alice")
            http = gw.http(token, Cookie="session=client-cookie", **{"X-Api-Key": "client-key"})
            async with http, Client(streamable_http_client(gw.url("up"), http_client=http), mode=mode) as client:
                await client.call_tool("get_customer", {"customer_id": "C001"})
    assert seen, "the upstream saw no request"
    for headers in seen:
        assert "authorization" not in headers
        assert "cookie" not in headers
        assert "x-api-key" not in headers
        assert token not in " ".join(headers.values())
    if mode == "legacy":
        # One upstream session for the one gateway session, and only its id travels upstream.
        upstream_ids = {h.get("mcp-session-id") for h in seen} - {None}
        assert len(upstream_ids) == 1
