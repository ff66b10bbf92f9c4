"""The benchmark's echo upstream through the real `mcp` client: in-process, over stdio, and over
Streamable HTTP in each of the SDK's serving variants (SSE or JSON replies, with or without sessions),
in both client modes ("legacy": initialize handshake; "auto": `server/discover` first)."""

from __future__ import annotations

from typing import Final

import anyio
import mcp_types as types
import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS

from mcp_bastion.demo.echo import build_server
from tests.helpers.procs import serve_module, stdio_params

pytestmark = pytest.mark.anyio

MODULE: Final = "mcp_bastion.demo.echo"
TIMEOUT: Final = 30.0
MODES: Final = ["legacy", "auto"]
TEXT: Final = "héllo, wörld\n{not json}"


async def check_echo(client: Client, mode: str) -> None:
    # "auto" must reach the 2026-07-28 per-request era through server/discover, not fall back to initialize.
    assert client.protocol_version in (MODERN_PROTOCOL_VERSIONS if mode == "auto" else HANDSHAKE_PROTOCOL_VERSIONS)
    [tool] = (await client.list_tools()).tools
    assert tool.name == "echo"
    assert tool.annotations is not None
    assert tool.annotations.read_only_hint is True
    assert tool.input_schema["additionalProperties"] is False
    result = await client.call_tool("echo", {"text": TEXT})
    assert not result.is_error
    assert result.content == [types.TextContent(text=TEXT)]


@pytest.mark.parametrize("mode", MODES)
async def test_in_process(mode: str) -> None:
    with anyio.fail_after(TIMEOUT):
        async with Client(build_server(), mode=mode) as client:
            await check_echo(client, mode)


@pytest.mark.parametrize("mode", MODES)
async def test_over_stdio(mode: str) -> None:
    with anyio.fail_after(TIMEOUT):
        async with Client(stdio_params(MODULE, "--stdio"), mode=mode) as client:
            await check_echo(client, mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "flags",
    [
        pytest.param((), id="sse"),
        pytest.param(("--json-response",), id="json"),
        pytest.param(("--stateless",), id="stateless-sse"),
        pytest.param(("--json-response", "--stateless"), id="stateless-json"),
    ],
)
async def test_over_http(flags: tuple[str, ...], mode: str) -> None:
    with anyio.fail_after(TIMEOUT):
        async with (
            serve_module(MODULE, "--http", "--port", "0", *flags) as url,
            Client(streamable_http_client(url), mode=mode) as client,
        ):
            assert url.startswith("http://127.0.0.1:")
            assert url.endswith("/mcp")
            await check_echo(client, mode)


@pytest.mark.parametrize(
    "arguments",
    [
        pytest.param({}, id="missing"),
        pytest.param({"text": 1}, id="not-a-string"),
        pytest.param({"text": "a", "extra": "b"}, id="unknown-argument"),
    ],
)
async def test_invalid_arguments_are_a_tool_error(arguments: dict[str, object]) -> None:
    async with Client(build_server(), mode="legacy") as client:
        result = await client.call_tool("echo", arguments)
    assert result.is_error


async def test_unknown_tool_is_a_protocol_error() -> None:
    async with Client(build_server(), mode="legacy") as client:
        with pytest.raises(MCPError) as raised:
            await client.call_tool("shout", {"text": "a"})
    assert raised.value.code == types.INVALID_PARAMS
