"""The benchmark upstream: an MCP server with one tool, `echo`, that returns its `text` unchanged.

Deliberately minimal (a hand-written schema, one type check, no models) so that a benchmark comparing
"client → echo" with "client → gateway → echo" measures the gateway's hop, not the upstream's work.

Run: `python -m mcp_bastion.demo.echo --stdio`, or
`--http [--host H] [--port N] [--json-response] [--stateless]` (see `serve`).
"""

from __future__ import annotations

from typing import Any, Final

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import MCPError

from mcp_bastion.demo.serve import main

ECHO_TOOL: Final = types.Tool(
    name="echo",
    title="Echo",
    description="Return `text` unchanged, as one text content item.",
    input_schema={
        "type": "object",
        "properties": {"text": {"type": "string", "description": "The text to send back."}},
        "required": ["text"],
        "additionalProperties": False,
    },
    annotations=types.ToolAnnotations(read_only_hint=True, open_world_hint=False),
)


def build_server() -> Server[Any]:
    """A fresh echo server."""

    async def list_tools(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[ECHO_TOOL])

    async def call_tool(
        ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        if params.name != ECHO_TOOL.name:
            raise MCPError(types.INVALID_PARAMS, f"Unknown tool: {params.name}")
        arguments = params.arguments or {}
        text = arguments.get("text")
        if not isinstance(text, str) or len(arguments) != 1:
            message = "Invalid arguments for echo: expected exactly one argument, text (a string)."
            return types.CallToolResult(content=[types.TextContent(text=message)], is_error=True)
        return types.CallToolResult(content=[types.TextContent(text=text)])

    return Server("mcp-bastion-demo-echo", version="1.0.0", on_list_tools=list_tools, on_call_tool=call_tool)


if __name__ == "__main__":
    main(build_server(), prog="python -m mcp_bastion.demo.echo")
