"""The ASGI application: routing, lifespan, and the last line of defence.

Routes are few and fixed, so they are matched by hand (no framework on the hot path; Starlette costs
~0.05 ms per request, see STACK.md):

- ``/mcp/<server>``: POST, GET, DELETE -> ``MCPEndpoint`` (everything else 405);
- ``/mcp`` (when enabled): the aggregate endpoint, several servers as one (``asgi.aggregate``);
- ``/.well-known/oauth-protected-resource/mcp/<server>``: the RFC 9728 document;
- other fixed JSON documents (the local issuer's JWKS), ``/healthz``;
- anything else goes to the ``web`` app when there is one (the authorization server's endpoints and its
  login and consent pages, a Starlette router), else 404.

This is one of the two places that catch ``Exception`` (the other is the pipeline driver): whatever
escapes becomes an opaque 500, logged with its traceback for the operator.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

import orjson

from mcp_bastion.asgi.mcp import MCPEndpoint, Receive, Scope, Send
from mcp_bastion.asgi.render import JSON_HEADERS, error_body
from mcp_bastion.errors import InternalError, MethodNotAllowed, NotFound
from mcp_bastion.upstream.aggregate import AGGREGATE

log = logging.getLogger("mcp_bastion.asgi")

MCP_PREFIX = "/mcp/"
AGGREGATE_PATH = "/mcp"
MCP_METHODS = frozenset({"POST", "GET", "DELETE"})
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"strict-transport-security", b"max-age=31536000"),
]


ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BastionApp:
    def __init__(
        self,
        *,
        mcp: MCPEndpoint,
        documents: Mapping[str, bytes],
        on_startup: Callable[[], Awaitable[None]],
        on_shutdown: Callable[[], Awaitable[None]],
        https: bool = True,
        web: ASGIApp | None = None,
        aggregate: MCPEndpoint | None = None,
    ) -> None:
        self.mcp = mcp
        self.aggregate = aggregate
        self.endpoints = frozenset(mcp.upstreams)
        self.documents = dict(documents)
        self.on_startup = on_startup
        self.on_shutdown = on_shutdown
        self.extra_headers = SECURITY_HEADERS if https else SECURITY_HEADERS[:1]
        self.web = web

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        # websocket: not served; returning without accepting closes it

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False
        extra = self.extra_headers

        async def guarded_send(message: MutableMapping[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                message["headers"] = headers + [(n, v) for n, v in extra if n not in present]
            await send(message)

        try:
            path: str = scope["path"]
            if path.startswith(MCP_PREFIX) and path[len(MCP_PREFIX) :] in self.endpoints:
                if scope["method"] not in MCP_METHODS:
                    await _plain_error(guarded_send, MethodNotAllowed(), allow=b"GET, POST, DELETE")
                    return
                await self.mcp(scope, receive, guarded_send, path[len(MCP_PREFIX) :])
                return
            if path == AGGREGATE_PATH and self.aggregate is not None:
                if scope["method"] not in MCP_METHODS:
                    await _plain_error(guarded_send, MethodNotAllowed(), allow=b"GET, POST, DELETE")
                    return
                await self.aggregate(scope, receive, guarded_send, AGGREGATE)
                return
            document = self.documents.get(path)
            if document is not None:
                if scope["method"] not in ("GET", "HEAD"):
                    await _plain_error(guarded_send, MethodNotAllowed(), allow=b"GET")
                    return
                await guarded_send({"type": "http.response.start", "status": 200, "headers": JSON_HEADERS})
                await guarded_send({"type": "http.response.body", "body": document})
                return
            if self.web is not None:
                await self.web(scope, receive, guarded_send)
                return
            await _plain_error(guarded_send, NotFound())
        except Exception:  # the ASGI top level: anything that escaped is a bug; answer opaquely
            log.exception("unhandled error serving %s %s", scope.get("method"), scope.get("path"))
            if not started:
                await _plain_error(guarded_send, InternalError())

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.on_startup()
                except Exception as exc:  # startup failure: report it to the server, which then exits
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.on_shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _plain_error(send: Send, error: InternalError | MethodNotAllowed | NotFound, allow: bytes = b"") -> None:
    headers = list(JSON_HEADERS)
    if allow:
        headers.append((b"allow", allow))
    await send({"type": "http.response.start", "status": error.http_status, "headers": headers})
    await send({"type": "http.response.body", "body": error_body(error, None)})


def json_document(value: object) -> bytes:
    return orjson.dumps(value)
