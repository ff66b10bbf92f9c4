"""The MCP Streamable HTTP endpoint ``/mcp/<server>``: HTTP in, the gate, HTTP out.

This module owns only HTTP framing: reading the body within limits, choosing JSON or SSE for the answer,
issuing the gateway's ``Mcp-Session-Id`` on a successful ``initialize``, and noticing when the client goes
away (which cancels the exchange and, through the upstream reply's ``aclose``, the upstream request). All
decisions are made by the gate (``mcp_bastion.pipeline``).

Framing rule: an upstream SSE stream whose first event is already the final response is answered as plain
JSON (cheaper for both sides and equivalent for the client); anything with progress, server requests or
resumable event ids stays SSE, with ids and retry hints passed through unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from mcp_bastion.asgi.render import JSON_HEADERS, Headers, error_body, error_headers, http_status_for
from mcp_bastion.errors import MalformedRequest, PayloadTooLarge
from mcp_bastion.exchange import Exchange, HTTPFacts
from mcp_bastion.pipeline.stage import Gate, Outgoing, Refusal
from mcp_bastion.sessions import SessionStore
from mcp_bastion.upstream.base import Event, Upstream
from mcp_bastion.upstream.sse import encode_event

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache, no-store"),
    (b"x-accel-buffering", b"no"),
]


class MCPEndpoint:
    """Serves POST (messages), GET (server stream) and DELETE (end session) for every upstream."""

    def __init__(
        self,
        *,
        gate: Gate,
        upstreams: Mapping[str, Upstream],
        sessions: SessionStore,
        metadata_urls: Mapping[str, str],
        max_body_bytes: int,
        body_timeout: float,
    ) -> None:
        self.gate = gate
        self.upstreams = upstreams
        self.sessions = sessions
        self.metadata_urls = metadata_urls
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send, endpoint: str) -> None:
        body_read = asyncio.Event()
        if scope["method"] != "POST":
            body_read.set()
        facts = _facts(scope, receive, self, body_read)
        exchange = Exchange(facts, endpoint, self.upstreams[endpoint], _request_id())
        task = asyncio.current_task()
        assert task is not None
        # Closing the connection is how a client cancels (the only way in the 2026-07-28 era): watch for
        # it once the body is in, and cancel the exchange, which closes the upstream request in turn. Most
        # calls finish in a few milliseconds, so the watcher task is only started for those that don't.
        watch = Watch(receive, body_read, task)
        timer = asyncio.get_running_loop().call_later(WATCH_AFTER_SECONDS, watch.start)
        try:
            await self._respond(exchange, send)
        except asyncio.CancelledError:
            if watch.fired:
                task.uncancel()
                return
            raise
        finally:
            timer.cancel()
            watch.stop()

    async def _respond(self, exchange: Exchange, send: Send) -> None:
        if exchange.http.method == "GET":
            await self._listen(exchange, send)
            return
        items = self.gate.run(exchange)
        async with contextlib.aclosing(items):
            first = await anext(items, None)
            if exchange.http.method == "POST" and _is_batch(exchange):
                await self._batch(first, items, send)
                return
            if first is None:
                await _send_empty(send, 202 if exchange.http.method == "POST" else 200)
                return
            ex, item = first
            if isinstance(item, Refusal):
                await self._refuse(ex, item, send)
                return
            kind = ex.reply.kind
            headers = self._session_header(ex)
            if kind == "json" or (kind == "sse" and _is_final(item) and item.event_id is None):
                await _drain(items)  # ends the exchange first: its audit record is written before the answer
                await _send_json(send, 200, item.data, headers)
                return
            if not _accepts_sse(ex):
                await self._json_only(ex, item, items, send, headers)
                return
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + headers})
            await _send_event(send, ex, item)
            async for ex, item in items:
                await _send_event(send, ex, item)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        await self._end_failed_initialize(exchange)

    async def _listen(self, exchange: Exchange, send: Send) -> None:
        """The GET stream: headers go out as soon as the upstream opened its stream, events as they come."""
        opened = False

        async def open_stream(_: Exchange) -> None:
            nonlocal opened
            opened = True
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})

        items = self.gate.run(exchange, on_open=open_stream)
        async with contextlib.aclosing(items):
            async for ex, item in items:
                if not opened:
                    if isinstance(item, Refusal):  # refused before the stream opened: a plain HTTP error
                        await self._refuse(ex, item, send)
                        return
                    await open_stream(ex)
                await _send_event(send, ex, item)
        if opened:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        else:
            await _send_empty(send, 200)

    def _session_header(self, exchange: Exchange) -> Headers:
        session = exchange.maybe_session
        message = exchange.maybe_message
        if session is None or message is None or message.method != "initialize":
            return []
        return [(b"mcp-session-id", session.id.encode())]

    async def _refuse(self, exchange: Exchange, refusal: Refusal, send: Send) -> None:
        message = exchange.maybe_message
        msg_id = message.id if message is not None and message.kind == "request" else None
        error = refusal.error
        status = http_status_for(error, has_id=msg_id is not None)
        headers = error_headers(error, resource_metadata_url=self.metadata_urls.get(exchange.endpoint))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": error_body(error, msg_id), "more_body": False})
        await self._end_failed_initialize(exchange)

    async def _json_only(
        self,
        exchange: Exchange,
        first: Event,
        items: AsyncIterator[tuple[Exchange, Outgoing]],
        send: Send,
        headers: Headers,
    ) -> None:
        """A client that accepts only JSON gets the final response; stream-only messages are dropped."""
        final: bytes | None = first.data if _is_final(first) else None
        async for ex, item in items:
            if isinstance(item, Refusal):
                await self._refuse(ex, item, send)
                return
            if _is_final(item):
                final = item.data
        if final is None:
            await _send_empty(send, 202)
        else:
            await _send_json(send, 200, final, headers)

    async def _batch(
        self,
        first: tuple[Exchange, Outgoing] | None,
        items: AsyncIterator[tuple[Exchange, Outgoing]],
        send: Send,
    ) -> None:
        """A JSON-RPC batch is answered with one JSON array of the responses (JSON-RPC 2.0 §6)."""
        answers: list[bytes] = []
        pending = [first] if first is not None else []
        async for pair in _chain(pending, items):
            ex, item = pair
            if isinstance(item, Refusal):
                message = ex.maybe_message
                if message is None:  # refused before the body was parsed: one error for the whole request
                    await self._refuse(ex, item, send)
                    return
                if ex.message.kind == "request":
                    answers.append(error_body(item.error, ex.message.id))
            elif _is_final(item):
                answers.append(item.data)
        if not answers:
            await _send_empty(send, 202)
            return
        await _send_json(send, 200, b"[" + b",".join(answers) + b"]", [])

    async def _end_failed_initialize(self, exchange: Exchange) -> None:
        """An ``initialize`` that did not succeed must not leave a session (or an upstream one) behind."""
        session = exchange.maybe_session
        message = exchange.maybe_message
        if session is None or exchange.rejection is None or message is None or message.method != "initialize":
            return
        self.sessions.pop(session.id)
        await exchange.channel.aclose()


def _facts(scope: Scope, receive: Receive, endpoint: MCPEndpoint, body_read: asyncio.Event) -> HTTPFacts:
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    tls = scope.get("extensions", {}).get("tls") or {}
    client = scope.get("client")
    return HTTPFacts(
        method=scope["method"],
        path=scope["path"],
        scheme=scope.get("scheme", "http"),
        headers=headers,
        client_addr=f"{client[0]}:{client[1]}" if client else "",
        read_body=lambda: _read_body(receive, headers, endpoint.max_body_bytes, endpoint.body_timeout, body_read),
        tls_version=tls.get("version"),
        client_cert_der=tls.get("client_cert_der"),
    )


async def _read_body(
    receive: Receive, headers: Mapping[str, str], limit: int, seconds: float, done: asyncio.Event
) -> bytes:
    declared = headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise MalformedRequest("bad Content-Length", reason="bad_content_length")
        if int(declared) > limit:
            raise PayloadTooLarge(f"declared body of {declared} bytes", reason="body_too_large")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(seconds):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise MalformedRequest("client went away while sending the body", reason="body_incomplete")
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"body over {limit} bytes", reason="body_too_large")
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
    except TimeoutError as exc:
        raise MalformedRequest(f"body not received within {seconds} s", reason="body_timeout") from exc
    done.set()
    return b"".join(chunks)


WATCH_AFTER_SECONDS = 0.05
"""Exchanges running longer than this get a task watching for the client's disconnect."""


class Watch:
    """Cancels the exchange's task when the client disconnects (started late; see ``MCPEndpoint``)."""

    def __init__(self, receive: Receive, body_read: asyncio.Event, task: asyncio.Task[Any]) -> None:
        self._receive = receive
        self._body_read = body_read
        self._task = task
        self._watcher: asyncio.Task[None] | None = None
        self.fired = False

    def start(self) -> None:
        self._watcher = asyncio.create_task(self._watch())

    def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()

    async def _watch(self) -> None:
        await self._body_read.wait()
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.fired = True
                self._task.cancel()
                return


def _request_id() -> str:
    return secrets.token_hex(8)


def _is_batch(exchange: Exchange) -> bool:
    body = exchange.maybe_body
    return body is not None and body.batch


def _is_final(event: Event) -> bool:
    return event.message is not None and event.message.kind == "response"


def _accepts_sse(exchange: Exchange) -> bool:
    accept = exchange.http.headers.get("accept", "")
    return "text/event-stream" in accept or "*/*" in accept


async def _send_event(send: Send, exchange: Exchange, item: Outgoing) -> None:
    if isinstance(item, Refusal):
        message = exchange.maybe_message
        if message is None or exchange.message.kind != "request":
            return
        data = error_body(item.error, exchange.message.id)
        await send({"type": "http.response.body", "body": encode_event(data), "more_body": True})
        return
    frame = encode_event(item.data, event_id=item.event_id, retry_ms=item.retry_ms)
    await send({"type": "http.response.body", "body": frame, "more_body": True})


async def _send_json(send: Send, status: int, body: bytes, extra: Headers) -> None:
    length = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": JSON_HEADERS + length + extra})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _send_empty(send: Send, status: int) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _drain(items: AsyncIterator[tuple[Exchange, Outgoing]]) -> None:
    async for _ in items:
        pass


async def _chain(
    first: list[tuple[Exchange, Outgoing]], rest: AsyncIterator[tuple[Exchange, Outgoing]]
) -> AsyncIterator[tuple[Exchange, Outgoing]]:
    for pair in first:
        yield pair
    async for pair in rest:
        yield pair
