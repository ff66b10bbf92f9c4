"""End to end: results are inspected on their way back — the real mcp client, the real gateway over HTTPS,
and a real MCP server (``tests.helpers.leaky``, a subprocess) whose results carry secrets, terminal escapes
and invisible characters, or break their own ``outputSchema``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import TextContent, TextResourceContents

from tests.e2e.gateway import RunningGateway, running_gateway
from tests.e2e.test_refusals import MODERN_HEADERS, call
from tests.helpers.leaky import AWS_KEY, BENIGN, PEM
from tests.helpers.procs import serve_module

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

MODULE = "tests.helpers.leaky"


@asynccontextmanager
async def leaky_gateway(tmp_path: Path, **inspect: object) -> AsyncIterator[tuple[RunningGateway, str]]:
    async with serve_module(MODULE, "--http", "--port", "0", "--json-response", "--stateless") as url:
        upstreams = {"up": {"url": url, "allow_insecure_http": True}}
        async with running_gateway(tmp_path, upstreams, inspect=inspect) as gw:
            yield gw, url


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    async with leaky_gateway(tmp_path) as (running, _):
        yield running


@asynccontextmanager
async def client(gw: RunningGateway) -> AsyncIterator[Client]:
    http = gw.http(gw.token())
    async with http, Client(streamable_http_client(gw.url("up"), http_client=http), mode="auto") as session:
        await session.list_tools()  # pins the definitions (outputSchema included)
        yield session


def text(result: object) -> str:
    content = result.content[0]  # type: ignore[attr-defined]
    assert isinstance(content, TextContent)
    return content.text


def last_call(gw: RunningGateway, target: str) -> dict[str, object]:
    return [r for r in gw.audit() if r.get("target") == target][-1]


async def test_secrets_in_a_tool_result_are_redacted(gw: RunningGateway) -> None:
    async with client(gw) as session:
        result = await session.call_tool("leak", {})
    shown = text(result)
    assert AWS_KEY not in shown
    assert "PRIVATE KEY" not in shown
    assert "Access key: [REDACTED:aws_access_key]\nKey file:\n[REDACTED:private_key]\nDone." in shown
    assert result.meta is not None
    findings = {(f["category"], f["name"]) for f in result.meta["io.mcp-bastion/findings"]}
    assert findings == {("secret", "aws_access_key"), ("secret", "private_key")}
    record = last_call(gw, "leak")
    assert (record["decision"], record["reason"]) == ("allow", "ok")
    assert record["findings"] == [
        {"category": "secret", "name": "aws_access_key", "count": 1},
        {"category": "secret", "name": "private_key", "count": 1},
    ]
    assert AWS_KEY not in str(gw.audit())
    assert PEM not in str(gw.audit())


async def test_a_resource_is_inspected_too(gw: RunningGateway) -> None:
    async with client(gw) as session:
        contents = (await session.read_resource("config://app")).contents[0]
    assert isinstance(contents, TextResourceContents)
    assert contents.text == "host = db.internal\ndb_password = [REDACTED:credential_assignment]\nport = 5432\n"


async def test_terminal_escapes_and_invisible_characters_are_stripped(gw: RunningGateway) -> None:
    async with client(gw) as session:
        shown = text(await session.call_tool("terminal", {}))
    assert shown == "red click here zerowidth abc hidden done"
    record = last_call(gw, "terminal")
    counts = {f["name"]: f["count"] for f in record["findings"]}  # type: ignore[attr-defined]
    assert counts == {"escape": 5, "zero_width": 1, "bidi": 2, "tag": 3}  # 2 colours, 2 OSC 8, 1 OSC 52


async def test_a_result_that_breaks_its_output_schema_is_refused(gw: RunningGateway) -> None:
    async with client(gw) as session:
        assert (await session.call_tool("report", {"mode": "ok"})).structured_content == {"total": 3}
        assert (await session.call_tool("report", {"mode": "error"})).is_error  # errors need no structure
        for mode, path in (("wrong", "/total"), ("missing", "")):
            with pytest.raises(MCPError) as refused:
                await session.call_tool("report", {"mode": mode})
            assert refused.value.error.data == {"reason": "result_invalid", "path": path}
            assert "three" not in str(refused.value.error)  # nothing of the invalid result passed on
    record = last_call(gw, "report")
    assert (record["decision"], record["reason"]) == ("deny", "result_invalid")


async def test_block_mode_refuses_the_whole_result(tmp_path: Path) -> None:
    async with leaky_gateway(tmp_path, secrets="block") as (gw, _):
        async with client(gw) as session:
            with pytest.raises(MCPError) as refused:
                await session.call_tool("leak", {})
            assert refused.value.error.data == {"reason": "result_blocked_secret"}
            assert AWS_KEY not in str(refused.value.error)
            assert text(await session.call_tool("benign", {})) == BENIGN  # the rest goes on
        record = last_call(gw, "leak")
        assert (record["decision"], record["reason"]) == ("deny", "result_blocked_secret")
        assert {f["name"] for f in record["findings"]} == {"aws_access_key", "private_key"}  # type: ignore[attr-defined]


async def test_a_benign_result_passes_byte_for_byte(tmp_path: Path) -> None:
    async with leaky_gateway(tmp_path) as (gw, upstream_url):
        async with client(gw) as session:
            assert text(await session.call_tool("benign", {})) == BENIGN
        message = call("benign", {})
        headers = {**MODERN_HEADERS, "mcp-name": "benign"}
        async with gw.http(gw.token()) as http:
            via_gateway = await http.post(gw.url("up"), json=message, headers=headers)
            direct = await http.post(upstream_url, json=message, headers=headers)
        assert via_gateway.status_code == direct.status_code == 200
        assert via_gateway.content == direct.content
        assert "findings" not in last_call(gw, "benign")
