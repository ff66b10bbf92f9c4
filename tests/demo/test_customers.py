"""The demo customers server through the real `mcp` client.

Behaviour is tested in-process (`mcp.Client(server)`); the transports are tested against the module run
as a child process, over stdio and over Streamable HTTP. Every test runs in both client modes: "legacy"
(the initialize handshake) and "auto" (probe `server/discover`, i.e. the 2026-07-28 era, else fall back).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final, Literal

import anyio
import mcp_types as types
import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS

from mcp_bastion.demo.customers import CUSTOMER_SCHEMA, EXPORT_STEPS, SCHEMA_URI, build_server
from tests.helpers.procs import serve_module, stdio_params

pytestmark = pytest.mark.anyio

MODULE: Final = "mcp_bastion.demo.customers"
TIMEOUT: Final = 30.0
MODES: Final = ["legacy", "auto"]
TOOLS: Final = {"search_customers", "get_customer", "update_customer_email", "delete_customer", "export_report"}


def text_of(result: types.CallToolResult) -> str:
    [content] = result.content
    assert isinstance(content, types.TextContent)
    return content.text


class ProgressLog:
    """A progress callback that records `(progress, total, message)` and signals the first and last step.

    The client runs each progress callback as its own task, so the last one may run after `call_tool`
    has returned: wait on `finished` before reading `events`.
    """

    def __init__(self) -> None:
        self.events: list[tuple[float, float | None, str | None]] = []
        self.started = anyio.Event()
        self.finished = anyio.Event()

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.events.append((progress, total, message))
        self.started.set()
        if total is not None and progress >= total:
            self.finished.set()


@asynccontextmanager
async def connect(transport: Literal["stdio", "http"], mode: str) -> AsyncIterator[Client]:
    if transport == "stdio":
        async with Client(stdio_params(MODULE, "--stdio"), mode=mode) as client:
            yield client
    else:
        async with (
            serve_module(MODULE, "--http", "--host", "127.0.0.1", "--port", "0") as url,
            Client(streamable_http_client(url), mode=mode) as client,
        ):
            yield client


async def check_everything(client: Client, mode: str) -> None:
    """What every transport must carry: listings, each tool, progress, errors, the resource, the prompt."""
    # "auto" must reach the 2026-07-28 per-request era through server/discover, not fall back to initialize.
    assert client.protocol_version in (MODERN_PROTOCOL_VERSIONS if mode == "auto" else HANDSHAKE_PROTOCOL_VERSIONS)
    listed = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(listed) == TOOLS
    assert all(tool.annotations is not None and tool.title for tool in listed.values())

    found = await client.call_tool("search_customers", {"query": "a", "region": "eu", "limit": 2})
    assert not found.is_error
    assert found.structured_content is not None
    assert len(found.structured_content["customers"]) == 2

    got = await client.call_tool("get_customer", {"customer_id": "C002"})
    assert got.structured_content is not None
    assert got.structured_content["id"] == "C002"

    changed = await client.call_tool("update_customer_email", {"customer_id": "C002", "email": "b@example.org"})
    assert changed.structured_content is not None
    assert changed.structured_content["email"] == "b@example.org"

    assert not (await client.call_tool("delete_customer", {"customer_id": "C003"})).is_error
    assert (await client.call_tool("get_customer", {"customer_id": "C003"})).is_error

    progress = ProgressLog()
    report = await client.call_tool("export_report", {"region": "apac"}, progress_callback=progress)
    assert text_of(report).startswith("id,name,plan,balance\n")
    await progress.finished.wait()
    assert sorted(p for p, _, _ in progress.events) == list(range(len(EXPORT_STEPS) + 1))

    invalid = await client.call_tool("get_customer", {"customer_id": "X-1"})
    assert invalid.is_error
    assert "customer_id" in text_of(invalid)

    [schema] = (await client.read_resource(SCHEMA_URI)).contents
    assert isinstance(schema, types.TextResourceContents)
    assert schema.mime_type == "application/json"

    prompt = await client.get_prompt("summarize_customer", {"customer_id": "C001"})
    [message] = prompt.messages
    assert isinstance(message.content, types.TextContent)
    assert '"id":"C001"' in message.content.text


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_served_over_a_transport(transport: Literal["stdio", "http"], mode: str) -> None:
    with anyio.fail_after(TIMEOUT):
        async with connect(transport, mode) as client:
            await check_everything(client, mode)


@pytest.mark.parametrize("mode", MODES)
async def test_served_in_process(mode: str) -> None:
    with anyio.fail_after(TIMEOUT):
        async with Client(build_server(), mode=mode) as client:
            await check_everything(client, mode)


@pytest.mark.parametrize("mode", MODES)
async def test_tools_declare_closed_schemas_and_their_effects(mode: str) -> None:
    async with Client(build_server(), mode=mode) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    for tool in tools.values():
        assert tool.input_schema["type"] == "object"
        assert tool.input_schema["additionalProperties"] is False
        assert tool.description
    hints = {
        name: (a.read_only_hint, a.destructive_hint, a.idempotent_hint)
        for name, tool in tools.items()
        if (a := tool.annotations) is not None
    }
    assert hints == {
        "search_customers": (True, None, None),
        "get_customer": (True, None, None),
        "export_report": (True, None, None),
        "update_customer_email": (False, False, True),
        "delete_customer": (False, True, True),
    }
    assert tools["get_customer"].input_schema["properties"]["customer_id"]["pattern"] == r"^C\d{3}$"
    assert tools["update_customer_email"].input_schema["properties"]["email"]["format"] == "email"
    assert tools["search_customers"].input_schema["properties"]["limit"]["maximum"] == 50
    assert tools["get_customer"].output_schema == CUSTOMER_SCHEMA


@pytest.mark.parametrize("mode", MODES)
async def test_search_matches_name_or_email_within_region_and_limit(mode: str) -> None:
    async with Client(build_server(), mode=mode) as client:

        async def ids(arguments: dict[str, Any]) -> list[str]:
            result = await client.call_tool("search_customers", arguments)
            assert result.structured_content is not None
            return [c["id"] for c in result.structured_content["customers"]]

        assert await ids({"query": "SATO"}) == ["C008"]
        assert await ids({"query": "@example.com", "region": "apac"}) == [
            "C006",
            "C008",
            "C011",
            "C015",
            "C016",
            "C020",
        ]
        assert len(await ids({"query": ""})) == 10
        assert len(await ids({"query": "", "limit": 50})) == 20
        assert await ids({"query": "nobody"}) == []


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        pytest.param("get_customer", {"customer_id": "C1"}, id="id-pattern"),
        pytest.param("get_customer", {"customer_id": "c001"}, id="id-case"),
        pytest.param("get_customer", {}, id="missing"),
        pytest.param("get_customer", {"customer_id": "C001", "verbose": True}, id="unknown-argument"),
        pytest.param("search_customers", {"query": "a", "limit": 51}, id="limit-over-50"),
        pytest.param("search_customers", {"query": "a", "limit": "5"}, id="limit-as-string"),
        pytest.param("search_customers", {"query": "a", "region": "mars"}, id="unknown-region"),
        pytest.param("update_customer_email", {"customer_id": "C001", "email": "not-an-email"}, id="email"),
        pytest.param("export_report", {"region": None}, id="null-region"),
    ],
)
@pytest.mark.parametrize("mode", MODES)
async def test_invalid_arguments_are_a_tool_error(tool: str, arguments: dict[str, Any], mode: str) -> None:
    async with Client(build_server(), mode=mode) as client:
        result = await client.call_tool(tool, arguments)
    assert result.is_error
    assert text_of(result).startswith(f"Invalid arguments for {tool}")


@pytest.mark.parametrize("mode", MODES)
async def test_unknown_names_are_protocol_errors(mode: str) -> None:
    async with Client(build_server(), mode=mode) as client:
        with pytest.raises(MCPError) as tool:
            await client.call_tool("drop_database", {})
        with pytest.raises(MCPError) as resource:
            await client.read_resource("customers://secrets")
        with pytest.raises(MCPError) as prompt:
            await client.get_prompt("summarize_customer", {"customer_id": "C999"})
    assert tool.value.code == resource.value.code == prompt.value.code == types.INVALID_PARAMS


@pytest.mark.parametrize("mode", MODES)
async def test_writes_change_only_this_servers_copy(mode: str) -> None:
    async with Client(build_server(), mode=mode) as client:
        arguments = {"customer_id": "C001", "email": "alba@example.net"}
        assert not (await client.call_tool("update_customer_email", arguments)).is_error
        # Idempotent: the same update again succeeds with the same record.
        again = await client.call_tool("update_customer_email", arguments)
        assert again.structured_content is not None
        assert again.structured_content["email"] == "alba@example.net"
        assert not (await client.call_tool("delete_customer", {"customer_id": "C001"})).is_error
        assert (await client.call_tool("delete_customer", {"customer_id": "C001"})).is_error
        assert (await client.call_tool("update_customer_email", arguments)).is_error
    async with Client(build_server(), mode=mode) as client:
        fresh = await client.call_tool("get_customer", {"customer_id": "C001"})
    assert fresh.structured_content is not None
    assert fresh.structured_content["email"] == "alba.moreno@example.com"


@pytest.mark.parametrize("mode", MODES)
async def test_export_report_totals_one_region(mode: str) -> None:
    async with Client(build_server(step_seconds=0), mode=mode) as client:
        report = text_of(await client.call_tool("export_report", {"region": "us"}))
    *rows, total = report.splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == ["C004", "C005", "C010", "C013", "C014", "C019"]
    assert total == "total,6 customers,,9714.64"


@pytest.mark.parametrize("mode", MODES)
async def test_export_report_stops_when_cancelled(mode: str) -> None:
    server = build_server(step_seconds=3600)  # only a cancellation can end this export
    handler_cancelled = anyio.Event()

    async def watch(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        try:
            return await call_next(ctx)
        except anyio.get_cancelled_exc_class():
            if ctx.method == "tools/call":
                handler_cancelled.set()
            raise

    server.middleware.append(watch)
    progress = ProgressLog()

    async def export(client: Client) -> None:
        await client.call_tool("export_report", {"region": "eu"}, progress_callback=progress)

    with anyio.fail_after(TIMEOUT):
        async with Client(server, mode=mode) as client:
            async with anyio.create_task_group() as tg:
                tg.start_soon(export, client)
                await progress.started.wait()  # the export is under way once its first progress arrived
                tg.cancel_scope.cancel()
            await handler_cancelled.wait()
            # The connection outlives the cancelled call.
            assert not (await client.call_tool("get_customer", {"customer_id": "C001"})).is_error


@pytest.mark.parametrize("mode", MODES)
async def test_schema_resource_and_summary_prompt(mode: str) -> None:
    async with Client(build_server(), mode=mode) as client:
        [resource] = (await client.list_resources()).resources
        [prompt] = (await client.list_prompts()).prompts
        [contents] = (await client.read_resource(SCHEMA_URI)).contents
    assert resource.uri == SCHEMA_URI
    assert isinstance(contents, types.TextResourceContents)
    assert set(CUSTOMER_SCHEMA["properties"]) == {"id", "name", "email", "region", "plan", "balance"}
    assert '"additionalProperties": false' in contents.text
    assert prompt.name == "summarize_customer"
    assert [(a.name, a.required) for a in prompt.arguments or []] == [("customer_id", True)]
