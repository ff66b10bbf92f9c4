"""End to end: the real mcp client -> HTTPS -> gateway -> a real Streamable HTTP upstream (subprocess)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.e2e.gateway import RunningGateway, running_gateway
from tests.helpers.procs import serve_module

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    async with serve_module("mcp_bastion.demo.customers", "--http", "--port", "0") as upstream_url:
        upstreams = {"up": {"url": upstream_url, "allow_insecure_http": True}}
        async with running_gateway(tmp_path, upstreams) as running:
            yield running


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_list_and_call_through_gateway(gw: RunningGateway, mode: str) -> None:
    http = gw.http(gw.token("alice"))
    async with http, Client(streamable_http_client(gw.url("up"), http_client=http), mode=mode) as client:
        tools = await client.list_tools()
        names = {t.name for t in tools.tools}
        assert "get_customer" in names
        result = await client.call_tool("get_customer", {"customer_id": "C001"})
        assert not result.is_error
    records = gw.audit()
    assert any(r["method"] == "tools/call" and r["decision"] == "allow" for r in records)
    assert all(r["principal"] == "alice" for r in records)
