"""A tiny MCP server over Streamable HTTP (JSON answers, stateless era) that records every request's headers.

It serves one read-only tool, ``whoami``, whose result is the ``Authorization`` header it received, so a
test can see exactly which credential the gateway sent for which user. Runs in the test's own event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

WHOAMI = {
    "name": "whoami",
    "description": "The credential the server received.",
    "inputSchema": {"type": "object", "properties": {}},
    "annotations": {"readOnlyHint": True},
}


REVIEW = {"name": "review", "description": "Review a change.", "arguments": [{"name": "change", "required": True}]}
NOTES = {"uri": "memo://notes", "name": "notes", "mimeType": "text/plain"}


@dataclass
class Recorder:
    url: str = ""
    requests: list[dict[str, str]] = field(default_factory=list)
    """Headers of every request received (lower-cased names)."""
    authorization_server: str | None = None
    """When set, served in the RFC 9728 protected-resource metadata (``resource`` = ``url``)."""
    tools: list[dict[str, object]] = field(default_factory=lambda: [dict(WHOAMI)])
    """What ``tools/list`` answers (a test may change it: a rug pull)."""
    prompts: list[dict[str, object]] = field(default_factory=lambda: [dict(REVIEW)])
    resources: list[dict[str, object]] = field(default_factory=lambda: [dict(NOTES)])
    userinfo: str | None = None
    """When set, the server guards its tool: the bearer token must be accepted by this OIDC UserInfo
    endpoint (the authorization server vouches for it), and ``whoami`` answers with the user it names."""


def _answer(message: dict[str, object], request: Request, recorder: Recorder) -> dict[str, object] | None:
    method = message.get("method")
    if "id" not in message:
        return None
    result: dict[str, object]
    if method == "initialize":
        result = {
            "protocolVersion": "2025-11-25",
            "capabilities": {"tools": {}, "prompts": {}, "resources": {}},
            "serverInfo": {"name": "rec", "version": "1"},
        }
    elif method == "tools/list":
        result = {"tools": recorder.tools}
    elif method == "prompts/list":
        result = {"prompts": recorder.prompts}
    elif method == "prompts/get":
        result = {"messages": [{"role": "user", "content": {"type": "text", "text": "Review this."}}]}
    elif method == "resources/list":
        result = {"resources": recorder.resources}
    elif method == "resources/read":
        result = {"contents": [{"uri": "memo://notes", "mimeType": "text/plain", "text": "remember the milk"}]}
    elif method == "tools/call":
        text = request.headers.get("authorization", "(none)")
        result = {"content": [{"type": "text", "text": text}], "isError": False}
    else:
        result = {}
    return {"jsonrpc": "2.0", "id": message["id"], "result": result}


async def _vouched(userinfo: str, authorization: str | None) -> str | None:
    """The ``sub`` the authorization server's UserInfo endpoint returns for this bearer token, or None."""
    if authorization is None:
        return None
    async with httpx.AsyncClient(timeout=5, trust_env=False) as client:
        response = await client.get(userinfo, headers={"authorization": authorization})
    if response.status_code != 200:
        return None
    sub = response.json().get("sub")
    return sub if isinstance(sub, str) else None


@contextlib.asynccontextmanager
async def recording_upstream() -> AsyncIterator[Recorder]:
    recorder = Recorder()

    async def mcp(request: Request) -> Response:
        recorder.requests.append({k.lower(): v for k, v in request.headers.items()})
        message = orjson.loads(await request.body())
        if recorder.userinfo is not None:
            who = await _vouched(recorder.userinfo, request.headers.get("authorization"))
            if who is None:
                return Response(status_code=401, headers={"www-authenticate": 'Bearer error="invalid_token"'})
            if message.get("method") == "tools/call":
                content = [{"type": "text", "text": f"sub={who}"}]
                vouched = {"jsonrpc": "2.0", "id": message["id"], "result": {"content": content}}
                return Response(orjson.dumps(vouched), media_type="application/json")
        answer = _answer(message, request, recorder)
        if answer is None:
            return Response(status_code=202)
        return Response(orjson.dumps(answer), media_type="application/json")

    async def protected_resource(request: Request) -> Response:
        if recorder.authorization_server is None:
            return Response(status_code=404)
        document = {"resource": recorder.url, "authorization_servers": [recorder.authorization_server]}
        return Response(orjson.dumps(document), media_type="application/json")

    app = Starlette(
        routes=[
            Route("/mcp", mcp, methods=["POST"]),
            Route("/.well-known/oauth-protected-resource/mcp", protected_resource, methods=["GET"]),
        ]
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        recorder.url = f"http://127.0.0.1:{port}/mcp"
        yield recorder
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()
