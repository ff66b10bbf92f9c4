"""A conformant MCP server for the official conformance suite's server scenarios.

Built on the `mcp` 2.3 low-level `Server`, so every tool, resource and prompt is
put on the wire exactly as the scenarios of `@modelcontextprotocol/conformance`
0.1.16 expect it (tool names, schemas, contents). Serves Streamable HTTP at
`/mcp` in both protocol eras (handshake era 2024-11-05 … 2025-11-25 and the
2026-07-28 per-request era), with an in-memory event store so that SSE polling
and resumption (SEP-1699) work, and with the SDK's DNS-rebinding protection
(Host/Origin allow-list) that it turns on for loopback hosts.

Run: `python tests/conformance/upstream.py --port N [--host 127.0.0.1]`.
Prints `READY` on stdout once listening and serves until killed.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
import warnings
from typing import Any, Final

import anyio
import mcp_types as types
import uvicorn
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

# Logging, sampling and setLevel are deprecated as of 2026-07-28 but are exactly what
# the handshake-era scenarios exercise.
warnings.filterwarnings("ignore", category=MCPDeprecationWarning)

SERVER_NAME: Final = "mcp-bastion-conformance-upstream"
SERVER_VERSION: Final = "1.0.0"

# A 1x1 PNG and a tiny WAV file.
TEST_IMAGE_BASE64: Final = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)
TEST_AUDIO_BASE64: Final = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA="

LOG_LEVELS: Final[tuple[types.LoggingLevel, ...]] = (
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
)

Ctx = ServerRequestContext[Any, Any]


# --------------------------------------------------------------------------- event store


class InMemoryEventStore(EventStore):
    """Keeps every SSE event so a client can resume a stream with Last-Event-ID (SEP-1699)."""

    def __init__(self, max_events: int = 10_000) -> None:
        self._events: list[tuple[str, str, types.JSONRPCMessage | None]] = []
        self._counter = 0
        self._max_events = max_events

    async def store_event(self, stream_id: str, message: types.JSONRPCMessage | None) -> str:
        self._counter += 1
        event_id = str(self._counter)
        self._events.append((stream_id, event_id, message))
        if len(self._events) > self._max_events:
            del self._events[: len(self._events) - self._max_events]
        return event_id

    async def replay_events_after(self, last_event_id: str, send_callback: EventCallback) -> str | None:
        stream_id = next((s for s, e, _ in self._events if e == last_event_id), None)
        if stream_id is None:
            return None
        after = int(last_event_id)
        for s, e, message in list(self._events):
            if s == stream_id and int(e) > after and message is not None:
                await send_callback(EventMessage(message, e))
        return stream_id


# --------------------------------------------------------------------------- state


class State:
    """Server-wide mutable state (subscriptions, log level per session)."""

    def __init__(self) -> None:
        self.subscriptions: dict[str, set[str]] = {}
        self.log_levels: dict[str, types.LoggingLevel] = {}


STATE = State()


def _session_key(ctx: Ctx) -> str:
    headers = getattr(ctx.request, "headers", None)
    if headers is not None:
        value = headers.get("mcp-session-id")
        if isinstance(value, str):
            return value
    return ""


def _is_modern(ctx: Ctx) -> bool:
    return ctx.protocol_version in MODERN_PROTOCOL_VERSIONS


def _text(text: str) -> types.TextContent:
    return types.TextContent(type="text", text=text)


def _error_result(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[_text(text)], is_error=True)


async def _log(ctx: Ctx, level: types.LoggingLevel, message: str) -> None:
    """Send a request-scoped log notification, honouring `logging/setLevel` (handshake era)."""
    threshold = STATE.log_levels.get(_session_key(ctx), "debug")
    if LOG_LEVELS.index(level) < LOG_LEVELS.index(threshold):
        return
    await ctx.session.send_log_message(
        level=level, data=message, logger="conformance", related_request_id=ctx.request_id
    )


# --------------------------------------------------------------------------- tools

EMPTY_SCHEMA: Final[dict[str, Any]] = {"type": "object", "properties": {}}

JSON_SCHEMA_2020_12_INPUT: Final[dict[str, Any]] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
    "additionalProperties": False,
}

ELICITATION_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "username": {"type": "string", "description": "User's response"},
        "email": {"type": "string", "description": "User's email address"},
    },
    "required": ["username", "email"],
}

SEP1034_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "User name", "default": "John Doe"},
        "age": {"type": "integer", "description": "User age", "default": 30},
        "score": {"type": "number", "description": "User score", "default": 95.5},
        "status": {
            "type": "string",
            "description": "User status",
            "enum": ["active", "inactive", "pending"],
            "default": "active",
        },
        "verified": {"type": "boolean", "description": "Verification status", "default": True},
    },
}

SEP1330_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "untitledSingle": {
            "type": "string",
            "description": "Simple enum without titles",
            "enum": ["option1", "option2", "option3"],
        },
        "titledSingle": {
            "type": "string",
            "description": "Enum with titled options (oneOf)",
            "oneOf": [
                {"const": "value1", "title": "First Option"},
                {"const": "value2", "title": "Second Option"},
                {"const": "value3", "title": "Third Option"},
            ],
        },
        "legacyEnum": {
            "type": "string",
            "description": "Legacy enum with enumNames",
            "enum": ["opt1", "opt2", "opt3"],
            "enumNames": ["Option One", "Option Two", "Option Three"],
        },
        "untitledMulti": {
            "type": "array",
            "description": "Multi-select without titles",
            "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
        },
        "titledMulti": {
            "type": "array",
            "description": "Multi-select with titled options",
            "items": {
                "anyOf": [
                    {"const": "value1", "title": "First Choice"},
                    {"const": "value2", "title": "Second Choice"},
                    {"const": "value3", "title": "Third Choice"},
                ]
            },
        },
    },
}


def _tool(name: str, description: str, schema: dict[str, Any] | None = None) -> types.Tool:
    return types.Tool(name=name, description=description, input_schema=schema or EMPTY_SCHEMA)


def _string_args(*names: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {n: {"type": "string"} for n in names},
        "required": list(names),
    }


TOOLS: Final[list[types.Tool]] = [
    _tool("test_simple_text", "Tests simple text content response"),
    _tool("test_image_content", "Tests image content response"),
    _tool("test_audio_content", "Tests audio content response"),
    _tool("test_embedded_resource", "Tests embedded resource content response"),
    _tool("test_multiple_content_types", "Tests response with multiple content types (text, image, resource)"),
    _tool("test_tool_with_logging", "Tests tool that emits log messages during execution"),
    _tool("test_tool_with_progress", "Tests tool that reports progress notifications"),
    _tool("test_error_handling", "Tests error response handling"),
    _tool("test_sampling", "Tests server-initiated sampling (LLM completion request)", _string_args("prompt")),
    _tool("test_elicitation", "Tests server-initiated elicitation (user input request)", _string_args("message")),
    _tool("test_elicitation_sep1034_defaults", "Tests elicitation with default values (SEP-1034)"),
    _tool("test_elicitation_sep1330_enums", "Tests elicitation with enum schema variations (SEP-1330)"),
    _tool("test_reconnection", "Tests SSE polling by closing the stream mid-call (SEP-1699)"),
    _tool("json_schema_2020_12_tool", "Tool with JSON Schema 2020-12 features", JSON_SCHEMA_2020_12_INPUT),
]
TOOL_NAMES: Final = frozenset(t.name for t in TOOLS)


async def list_tools(ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
    return types.ListToolsResult(tools=TOOLS)


async def _sampling(ctx: Ctx, params: types.CallToolRequestParams) -> types.CallToolResult | types.InputRequiredResult:
    prompt = str((params.arguments or {}).get("prompt", ""))
    request_params = types.CreateMessageRequestParams(
        messages=[types.SamplingMessage(role="user", content=_text(prompt))], max_tokens=100
    )
    if _is_modern(ctx):
        # 2026-07-28: no server-to-client requests; ask through InputRequiredResult instead.
        response = (params.input_responses or {}).get("sampling")
        if response is None:
            return types.InputRequiredResult(
                input_requests={"sampling": types.CreateMessageRequest(params=request_params)}
            )
        result: types.CreateMessageResult | types.CreateMessageResultWithTools | Any = response
    else:
        result = await ctx.session.create_message(
            messages=request_params.messages, max_tokens=100, related_request_id=ctx.request_id
        )
    content = getattr(result, "content", None)
    text = content.text if isinstance(content, types.TextContent) else "No response"
    return types.CallToolResult(content=[_text(f"LLM response: {text}")])


async def _elicit(
    ctx: Ctx, params: types.CallToolRequestParams, message: str, schema: dict[str, Any], prefix: str
) -> types.CallToolResult | types.InputRequiredResult:
    if _is_modern(ctx):
        response = (params.input_responses or {}).get("elicitation")
        if response is None:
            request = types.ElicitRequest(
                params=types.ElicitRequestFormParams(message=message, requested_schema=schema)
            )
            return types.InputRequiredResult(input_requests={"elicitation": request})
        if not isinstance(response, types.ElicitResult):
            return _error_result("Unexpected input response for elicitation")
        result = response
    else:
        result = await ctx.session.elicit_form(message, schema, related_request_id=ctx.request_id)
    content = json.dumps(result.content or {}, separators=(",", ":"))
    return types.CallToolResult(content=[_text(f"{prefix}: action={result.action}, content={content}")])


async def call_tool(ctx: Ctx, params: types.CallToolRequestParams) -> types.CallToolResult | types.InputRequiredResult:
    name = params.name
    args = params.arguments or {}
    match name:
        case "test_simple_text":
            return types.CallToolResult(content=[_text("This is a simple text response for testing.")])
        case "test_image_content":
            return types.CallToolResult(
                content=[types.ImageContent(type="image", data=TEST_IMAGE_BASE64, mime_type="image/png")]
            )
        case "test_audio_content":
            return types.CallToolResult(
                content=[types.AudioContent(type="audio", data=TEST_AUDIO_BASE64, mime_type="audio/wav")]
            )
        case "test_embedded_resource":
            return types.CallToolResult(
                content=[
                    types.EmbeddedResource(
                        type="resource",
                        resource=types.TextResourceContents(
                            uri="test://embedded-resource",
                            mime_type="text/plain",
                            text="This is an embedded resource content.",
                        ),
                    )
                ]
            )
        case "test_multiple_content_types":
            return types.CallToolResult(
                content=[
                    _text("Multiple content types test:"),
                    types.ImageContent(type="image", data=TEST_IMAGE_BASE64, mime_type="image/png"),
                    types.EmbeddedResource(
                        type="resource",
                        resource=types.TextResourceContents(
                            uri="test://mixed-content-resource",
                            mime_type="application/json",
                            text='{"test":"data","value":123}',
                        ),
                    ),
                ]
            )
        case "test_tool_with_logging":
            await _log(ctx, "info", "Tool execution started")
            await anyio.sleep(0.05)
            await _log(ctx, "info", "Tool processing data")
            await anyio.sleep(0.05)
            await _log(ctx, "info", "Tool execution completed")
            return types.CallToolResult(content=[_text("Tool with logging executed successfully")])
        case "test_tool_with_progress":
            for step in (0, 50, 100):
                await ctx.session.report_progress(step, 100, f"Completed step {step} of 100")
                if step < 100:
                    await anyio.sleep(0.05)
            meta: dict[str, Any] = dict(ctx.meta or {})
            token = meta.get("progress_token", meta.get("progressToken", 0))
            return types.CallToolResult(content=[_text(str(token))])
        case "test_error_handling":
            return _error_result("This tool intentionally returns an error for testing")
        case "test_sampling":
            return await _sampling(ctx, params)
        case "test_elicitation":
            return await _elicit(ctx, params, str(args.get("message", "")), ELICITATION_SCHEMA, "User response")
        case "test_elicitation_sep1034_defaults":
            return await _elicit(
                ctx, params, "Please provide user information", SEP1034_SCHEMA, "Elicitation completed"
            )
        case "test_elicitation_sep1330_enums":
            return await _elicit(
                ctx,
                params,
                "Please select values using different enum schema types",
                SEP1330_SCHEMA,
                "Elicitation completed",
            )
        case "test_reconnection":
            await _log(ctx, "info", "Before disconnect")
            if ctx.close_sse_stream is not None:
                await ctx.close_sse_stream()
            await anyio.sleep(0.2)
            await _log(ctx, "info", "After reconnect")
            return types.CallToolResult(content=[_text("Reconnection test completed")])
        case "json_schema_2020_12_tool":
            return types.CallToolResult(content=[_text(json.dumps(args, sort_keys=True))])
    raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown tool: {name}")


# --------------------------------------------------------------------------- resources

STATIC_TEXT: Final = "This is the content of the static text resource."
WATCHED_TEXT: Final = "Watched resource content"

RESOURCES: Final[list[types.Resource]] = [
    types.Resource(
        uri="test://static-text",
        name="static-text",
        description="A static text resource for testing",
        mime_type="text/plain",
    ),
    types.Resource(
        uri="test://static-binary",
        name="static-binary",
        description="A static binary resource (image) for testing",
        mime_type="image/png",
    ),
    types.Resource(
        uri="test://watched-resource",
        name="watched-resource",
        description="A resource that can be subscribed to for updates",
        mime_type="text/plain",
    ),
]

TEMPLATES: Final[list[types.ResourceTemplate]] = [
    types.ResourceTemplate(
        uri_template="test://template/{id}/data",
        name="template",
        description="A resource template with parameter substitution",
        mime_type="application/json",
    )
]

RESOURCE_NOT_FOUND_LEGACY: Final = -32002
TEMPLATE_PREFIX: Final = "test://template/"
TEMPLATE_SUFFIX: Final = "/data"


async def list_resources(ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListResourcesResult:
    return types.ListResourcesResult(resources=RESOURCES)


async def list_resource_templates(
    ctx: Ctx, params: types.PaginatedRequestParams | None
) -> types.ListResourceTemplatesResult:
    return types.ListResourceTemplatesResult(resource_templates=TEMPLATES)


def _text_contents(uri: str, mime_type: str, text: str) -> types.ReadResourceResult:
    return types.ReadResourceResult(contents=[types.TextResourceContents(uri=uri, mime_type=mime_type, text=text)])


async def read_resource(ctx: Ctx, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
    uri = str(params.uri)
    if uri == "test://static-text":
        return _text_contents(uri, "text/plain", STATIC_TEXT)
    if uri == "test://watched-resource":
        return _text_contents(uri, "text/plain", WATCHED_TEXT)
    if uri == "test://static-binary":
        return types.ReadResourceResult(
            contents=[types.BlobResourceContents(uri=uri, mime_type="image/png", blob=TEST_IMAGE_BASE64)]
        )
    if uri.startswith(TEMPLATE_PREFIX) and uri.endswith(TEMPLATE_SUFFIX):
        ident = uri[len(TEMPLATE_PREFIX) : -len(TEMPLATE_SUFFIX)]
        if ident and "/" not in ident:
            body = json.dumps({"id": ident, "templateTest": True, "data": f"Data for ID: {ident}"})
            return _text_contents(uri, "application/json", body)
    # -32002 is "resource not found" up to 2025-11-25; 2026-07-28 retired it for invalid params.
    code = types.INVALID_PARAMS if _is_modern(ctx) else RESOURCE_NOT_FOUND_LEGACY
    raise MCPError(code=code, message=f"Resource not found: {uri}", data={"uri": uri})


async def subscribe(ctx: Ctx, params: types.SubscribeRequestParams) -> types.EmptyResult:
    STATE.subscriptions.setdefault(_session_key(ctx), set()).add(str(params.uri))
    return types.EmptyResult()


async def unsubscribe(ctx: Ctx, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
    STATE.subscriptions.get(_session_key(ctx), set()).discard(str(params.uri))
    return types.EmptyResult()


# --------------------------------------------------------------------------- prompts

PROMPTS: Final[list[types.Prompt]] = [
    types.Prompt(name="test_simple_prompt", description="A simple prompt without arguments"),
    types.Prompt(
        name="test_prompt_with_arguments",
        description="A prompt with required arguments",
        arguments=[
            types.PromptArgument(name="arg1", description="First test argument", required=True),
            types.PromptArgument(name="arg2", description="Second test argument", required=True),
        ],
    ),
    types.Prompt(
        name="test_prompt_with_embedded_resource",
        description="A prompt that includes an embedded resource",
        arguments=[types.PromptArgument(name="resourceUri", description="URI of the resource to embed", required=True)],
    ),
    types.Prompt(name="test_prompt_with_image", description="A prompt that includes image content"),
]


async def list_prompts(ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListPromptsResult:
    return types.ListPromptsResult(prompts=PROMPTS)


def _user(content: types.ContentBlock) -> types.PromptMessage:
    return types.PromptMessage(role="user", content=content)


async def get_prompt(ctx: Ctx, params: types.GetPromptRequestParams) -> types.GetPromptResult:
    args = params.arguments or {}
    match params.name:
        case "test_simple_prompt":
            messages = [_user(_text("This is a simple prompt for testing."))]
        case "test_prompt_with_arguments":
            for required in ("arg1", "arg2"):
                if required not in args:
                    raise MCPError(code=types.INVALID_PARAMS, message=f"Missing required argument: {required}")
            messages = [_user(_text(f"Prompt with arguments: arg1='{args['arg1']}', arg2='{args['arg2']}'"))]
        case "test_prompt_with_embedded_resource":
            if "resourceUri" not in args:
                raise MCPError(code=types.INVALID_PARAMS, message="Missing required argument: resourceUri")
            messages = [
                _user(
                    types.EmbeddedResource(
                        type="resource",
                        resource=types.TextResourceContents(
                            uri=args["resourceUri"],
                            mime_type="text/plain",
                            text="Embedded resource content for testing.",
                        ),
                    )
                ),
                _user(_text("Please process the embedded resource above.")),
            ]
        case "test_prompt_with_image":
            messages = [
                _user(types.ImageContent(type="image", data=TEST_IMAGE_BASE64, mime_type="image/png")),
                _user(_text("Please analyze the image above.")),
            ]
        case _:
            raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown prompt: {params.name}")
    return types.GetPromptResult(messages=messages)


# --------------------------------------------------------------------------- completion, logging

COMPLETIONS: Final[dict[str, list[str]]] = {
    "arg1": ["paris", "park", "party", "test", "testing"],
    "arg2": ["world", "wonder"],
}


async def complete(ctx: Ctx, params: types.CompleteRequestParams) -> types.CompleteResult:
    values: list[str] = []
    if isinstance(params.ref, types.PromptReference) and params.ref.name == "test_prompt_with_arguments":
        prefix = params.argument.value
        values = [v for v in COMPLETIONS.get(params.argument.name, []) if v.startswith(prefix)]
    return types.CompleteResult(completion=types.Completion(values=values, total=len(values), has_more=False))


async def set_logging_level(ctx: Ctx, params: types.SetLevelRequestParams) -> types.EmptyResult:
    STATE.log_levels[_session_key(ctx)] = params.level
    return types.EmptyResult()


# --------------------------------------------------------------------------- wiring


def build_server() -> Server[Any]:
    return Server(
        SERVER_NAME,
        version=SERVER_VERSION,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_list_resource_templates=list_resource_templates,
        on_read_resource=read_resource,
        on_subscribe_resource=subscribe,
        on_unsubscribe_resource=unsubscribe,
        on_list_prompts=list_prompts,
        on_get_prompt=get_prompt,
        on_completion=complete,
        on_set_logging_level=set_logging_level,
    )


def bind(host: str, port: int) -> socket.socket:
    """Bind the listening socket up front, so a busy port is a clear error, not a traceback."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


async def serve(sock: socket.socket, host: str) -> None:
    app = build_server().streamable_http_app(
        streamable_http_path="/mcp",
        event_store=InMemoryEventStore(),
        retry_interval=100,  # ms, sent in the SSE priming event
        host=host,  # loopback hosts turn on the SDK's DNS-rebinding protection
    )
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=1)
    web = uvicorn.Server(config)

    async def announce() -> None:
        while not web.started:
            if web.should_exit:
                return
            await anyio.sleep(0.01)
        sys.stdout.write("READY\n")
        sys.stdout.flush()

    async with anyio.create_task_group() as tg:
        tg.start_soon(announce)
        await web.serve(sockets=[sock])
        tg.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log-level", default="WARNING")
    ns = parser.parse_args(argv)
    logging.basicConfig(level=ns.log_level.upper(), stream=sys.stderr)
    try:
        sock = bind(ns.host, ns.port)
    except OSError as exc:
        print(f"upstream: cannot listen on {ns.host}:{ns.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    with sock:
        anyio.run(serve, sock, ns.host)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
