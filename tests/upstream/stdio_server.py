"""A controllable MCP server for the stdio upstream tests: `python tests/upstream/stdio_server.py`.

At startup it prints one junk line on stdout (before the SDK claims the pipe) and one line on stderr.
Tools (arguments in brackets):

    echo [text]            returns text
    pid                    returns the child's process id and a tag drawn at its start (a sandboxed child
                           has its own PID namespace, where every child is pid 2)
    env                    returns the child's environment variable names, comma-separated
    gather [tag, group, size, notify]
                           progress "tag" once `size` calls of `group` run together (and, with `notify`,
                           notifications/tools/list_changed), then returns tag
    slow [tag]             progress "tag", then waits for cancellation (recorded for `was_cancelled`);
                           on cancellation it also sends notifications/tools/list_changed (unsolicited)
    was_cancelled [tag]    waits until `slow(tag)` was cancelled; returns "cancelled"
    hang                   progress "hanging", then blocks a worker thread for an hour, deaf to cancellation
                           and to the end of stdin (only a signal stops the process)
    ask                    pings the client (a server-initiated request) and returns "pong"
    big [size]             returns a text of `size` bytes
    crash                  exits the process at once (status 1)
"""

from __future__ import annotations

import os
import sys
import time
from collections import defaultdict
from typing import Any

import anyio
import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

Ctx = ServerRequestContext[Any, Any]

TOOL_NAMES = ("echo", "pid", "env", "gather", "slow", "was_cancelled", "hang", "ask", "big", "crash")

TAG = os.urandom(4).hex()

cancelled: defaultdict[str, anyio.Event] = defaultdict(anyio.Event)
groups: defaultdict[str, list[anyio.Event]] = defaultdict(list)


def _text(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=text)])


async def _gather(ctx: Ctx, tag: str, group: str, size: int, notify: bool) -> types.CallToolResult:
    arrived = anyio.Event()
    members = groups[group]
    members.append(arrived)
    if len(members) >= size:
        for event in members:
            event.set()
    await arrived.wait()
    await ctx.session.report_progress(1, 1, tag)
    if notify:
        await ctx.session.send_tool_list_changed()
    return _text(tag)


async def _slow(ctx: Ctx, tag: str) -> types.CallToolResult:
    await ctx.session.report_progress(0, None, tag)
    try:
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            cancelled[tag].set()
            await ctx.session.send_tool_list_changed()
    raise AssertionError("unreachable")  # pragma: no cover


async def call_tool(ctx: Ctx, params: types.CallToolRequestParams) -> types.CallToolResult:
    args = params.arguments or {}
    match params.name:
        case "echo":
            return _text(str(args["text"]))
        case "pid":
            return _text(f"{os.getpid()}-{TAG}")
        case "env":
            return _text(",".join(sorted(os.environ)))
        case "gather":
            return await _gather(ctx, str(args["tag"]), str(args["group"]), int(args["size"]), bool(args.get("notify")))
        case "slow":
            return await _slow(ctx, str(args["tag"]))
        case "was_cancelled":
            await cancelled[str(args["tag"])].wait()
            return _text("cancelled")
        case "hang":
            await ctx.session.report_progress(0, None, "hanging")
            await anyio.to_thread.run_sync(time.sleep, 3600, abandon_on_cancel=False)
            return _text("woke up")
        case "ask":
            await ctx.session.send_ping()
            return _text("pong")
        case "big":
            return _text("x" * int(args["size"]))
        case "crash":
            os._exit(1)
    raise ValueError(f"unknown tool {params.name}")


async def list_tools(ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
    schema: dict[str, Any] = {"type": "object"}
    return types.ListToolsResult(tools=[types.Tool(name=name, input_schema=schema) for name in TOOL_NAMES])


async def main() -> None:
    # Before stdio_server() claims fd 1 (it then points fd 1 at stderr): this line really reaches the pipe.
    sys.stdout.write("stdio test server: not a JSON-RPC message\n")
    sys.stdout.flush()
    print("stdio test server: started", file=sys.stderr, flush=True)
    server: Server[Any] = Server("stdio-test", version="1.0.0", on_list_tools=list_tools, on_call_tool=call_tool)
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main)
