"""Local MCP servers over stdio (MCP 2025-11-25 §Transports "stdio": newline-delimited JSON-RPC on the pipes).

The gateway runs the server as child processes (supervised by ``upstream.process``); this module maps ids
and routes messages between a child and the gateway's streams.

- Handshake era (``open_session``): one child per gateway session. A stdio server has exactly one session,
  so sharing a child would share a session between users. The client's ``initialize`` (once answered) and
  ``notifications/initialized`` are remembered and replayed into a restarted child: a crash costs the
  in-flight requests (``upstream_crashed``), not the session.
- Modern era (``stateless``): one child per principal, shared by that principal's concurrent requests and
  stopped after ``idle_seconds`` unused. No ``initialize``: every 2026-07-28 request carries its own
  ``_meta`` envelope (the SDK's stdio server serves the modern era when the first request carries one).

Ids: a request gets a fresh integer id from the link's counter; the table upstream id → pending request
restores the client's id on the response. Progress tokens become unique upstream tokens and are restored on
``notifications/progress``; a client's ``notifications/cancelled`` is translated to the upstream id.
Requests from a child (sampling, elicitation, roots, ping) get a process-wide gateway id before they reach
a client, so two children never collide on one client-facing stream; the client's answer is mapped back.

The stdio wire has no "related request", so other child messages go to the only in-flight request's
stream, else the listen (GET) stream, else the latest in-flight request's stream, else a backlog of
``BACKLOG`` messages (oldest dropped) handed to the next stream that opens.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import shutil
from collections import deque
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from mcp_bastion.errors import ConfigError, MalformedRequest, MethodNotAllowed, UpstreamError, UpstreamTimeout
from mcp_bastion.exchange import Principal
from mcp_bastion.jsonrpc.message import JSONObject, Message, RequestId, parse_message
from mcp_bastion.upstream.base import Channel, Event, Reply, no_events
from mcp_bastion.upstream.process import LOG_LINE_CHARS, ChildProcess, Supervisor, child_environment, logger

DEFAULT_BACKOFF: Final = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
"""Seconds before each restart of a crashed child; a crash after the last step breaks the channel."""

BACKLOG: Final = 100
"""Unsolicited child messages kept while no stream is open to carry them."""

STREAM_LIMIT: Final = 1000
"""Events queued on one stream for a slow reader before further notifications are dropped (never the end)."""

SERVER_REQUESTS_LIMIT: Final = 1000
"""Unanswered child→client requests remembered per child; the oldest is forgotten beyond this."""

_gateway_ids = itertools.count(1)
"""Ids of child→client requests as clients see them: unique across every child of this process."""


class _Stream:
    """The events of one reply, queued by the link and read by the gate.

    Notifications past ``STREAM_LIMIT`` are dropped for a slow reader; the end (a response, an error, or
    nothing) always fits. ``aclose`` before the end tells the link its reader left. A class rather than an
    async generator, so that closing works even before the first ``__anext__``.
    """

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Event | UpstreamError | None] = asyncio.Queue()
        self._done = False
        self.on_close: Callable[[], None] = lambda: None

    def put(self, event: Event) -> bool:
        if self._queue.qsize() >= STREAM_LIMIT:
            return False
        self._queue.put_nowait(event)
        return True

    def finish(self, end: Event | UpstreamError | None) -> None:
        self._queue.put_nowait(end)

    def __aiter__(self) -> _Stream:
        return self

    async def __anext__(self) -> Event:
        if self._done:
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is None:
            self._done = True
            raise StopAsyncIteration
        if isinstance(item, UpstreamError):
            self._done = True
            raise item
        if item.message is not None and item.message.kind == "response":
            self._done = True
        return item

    async def aclose(self) -> None:
        self._done = True
        self.on_close()


@dataclass(eq=False, slots=True)
class _Pending:
    """One request sent to a child and not yet answered."""

    client_id: RequestId
    upstream_id: int
    method: str
    params: JSONObject
    child: ChildProcess
    stream: _Stream = field(default_factory=_Stream)
    client_token: str | int | None = None
    upstream_token: str | None = None
    timer: asyncio.TimerHandle | None = None
    internal: asyncio.Future[Message] | None = None
    """Set for the gateway's own requests (the replayed ``initialize``): the answer goes here, not to a client."""


class _Link:
    """One supervised child and the id, token and routing tables of the messages crossing its pipes."""

    def __init__(self, up: StdioUpstream, *, replay: bool, on_idle: Callable[[_Link], None] | None) -> None:
        self._up = up
        self._replay = replay
        self._on_idle = on_idle
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._tokens: dict[str, _Pending] = {}
        self._server_requests: dict[int, RequestId] = {}
        """Gateway id → the child's own id, for child→client requests awaiting the client's answer."""
        self._listener: _Stream | None = None
        self._backlog: deque[Event] = deque()
        self._initialize: JSONObject | None = None
        self._initialized = False
        self._busy = 0
        self._idle: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._supervisor = Supervisor(up.name, self._spawn, self, up.restart_backoff, up.request_timeout)
        self._supervisor.start()
        self.closed = asyncio.Event()
        """Set once the link's child is stopped for good (closed, or reaped after ``idle_seconds``)."""
        self._touch()

    @property
    def broken(self) -> bool:
        return self._supervisor.broken is not None

    async def _spawn(self) -> ChildProcess:
        up = self._up
        return await ChildProcess.spawn(
            up.name, up.command, env=up.env, cwd=up.cwd, limit=up.max_message_bytes, write_timeout=up.request_timeout
        )

    async def aclose(self) -> None:
        self._on_idle = None  # closing already: no idle reap from now on
        if self._idle is not None:
            self._idle.cancel()
        await self._supervisor.aclose()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.closed.set()

    # -- gateway → child ------------------------------------------------------------------------------

    async def send(self, message: Message) -> Reply:
        self._busy += 1
        try:
            child = await self._supervisor.current()
            if message.kind == "request":
                return await self._request(child, message)
            raw = self._respond(message) if message.kind == "response" else self._notify(message)
            if raw is not None:
                await child.write(orjson.dumps(raw))
            return Reply("accepted", no_events(), status=202)
        finally:
            self._busy -= 1
            self._touch()

    async def _request(self, child: ChildProcess, message: Message) -> Reply:
        assert message.id is not None  # a request, by classification
        assert message.method is not None
        uid = next(self._ids)
        pending = _Pending(message.id, uid, message.method, message.params, child)
        raw: JSONObject = {**message.raw, "id": uid}
        token = _progress_token(message.params)
        if token is not None:
            pending.client_token, pending.upstream_token = token, f"bastion-{uid}"
            raw["params"] = _with_token(message.params, pending.upstream_token)
            self._tokens[pending.upstream_token] = pending
        self._register(pending)
        try:
            await child.write(orjson.dumps(raw))
        except BaseException:
            # The line may have reached the child (a timeout or cancellation during drain): cancel it there.
            self._abandon(pending, "the gateway could not deliver the request")
            raise
        pending.stream.on_close = functools.partial(self._abandon, pending, "the client went away")
        return Reply("sse", pending.stream)

    def _respond(self, message: Message) -> JSONObject | None:
        """A client's answer to a child's request, under the child's own id (None: unknown, dropped)."""
        gid = message.id
        original = self._server_requests.pop(gid, None) if isinstance(gid, int) else None
        if original is None:
            logger.info("%s: dropped a client response for unknown request id %r", self._up.name, gid)
            return None
        return {**message.raw, "id": original}

    def _notify(self, message: Message) -> JSONObject | None:
        if message.method == "notifications/initialized":
            self._initialized = True
        if message.method != "notifications/cancelled":
            return message.raw
        request_id = message.params.get("requestId")
        matches = [p for p in self._pending.values() if p.internal is None and _same_id(p.client_id, request_id)]
        if len(matches) != 1 or matches[0].method == "initialize":
            # Unknown or finished (or ambiguous on a shared child): nothing left to cancel.
            logger.debug("%s: dropped a cancellation of unknown request %r", self._up.name, request_id)
            return None
        pending = matches[0]
        self._forget(pending)
        pending.stream.finish(None)
        return {**message.raw, "params": {**message.params, "requestId": pending.upstream_id}}

    def _register(self, pending: _Pending) -> None:
        self._pending[pending.upstream_id] = pending
        loop = asyncio.get_running_loop()
        pending.timer = loop.call_later(self._up.request_timeout, self._expire, pending)
        if pending.internal is None and self._listener is None:
            self._deliver_backlog(pending.stream)

    def _forget(self, pending: _Pending) -> bool:
        """Drop ``pending`` from the tables; False if it was already gone (answered, failed, abandoned)."""
        if self._pending.get(pending.upstream_id) is not pending:
            return False
        del self._pending[pending.upstream_id]
        if pending.upstream_token is not None:
            del self._tokens[pending.upstream_token]
        if pending.timer is not None:
            pending.timer.cancel()
        self._touch()
        return True

    def _abandon(self, pending: _Pending, reason: str) -> None:
        """The reader left before the answer: forget the request and tell the child to stop working on it."""
        if self._forget(pending):
            self._background(self._cancel_upstream(pending, reason))

    def _expire(self, pending: _Pending) -> None:
        if not self._forget(pending):
            return
        error = UpstreamTimeout(f"{self._up.name}: no answer to {pending.method} in {self._up.request_timeout} s")
        if pending.internal is not None:
            if not pending.internal.done():
                pending.internal.set_exception(error)
            return
        pending.stream.finish(error)
        self._background(self._cancel_upstream(pending, "timed out"))

    async def _cancel_upstream(self, pending: _Pending, reason: str) -> None:
        if pending.method == "initialize":
            return  # MCP: an initialize request must not be cancelled
        params: JSONObject = {"requestId": pending.upstream_id, "reason": reason}
        with contextlib.suppress(UpstreamError):
            await pending.child.write(
                orjson.dumps({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": params})
            )

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        # Not awaited by the caller: a reader that goes away may be inside a cancelled scope, where an await
        # would be interrupted before the child heard about it.
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def listen(self) -> Reply:
        if self._supervisor.broken is not None:
            raise UpstreamError(self._supervisor.broken.detail, reason=self._supervisor.broken.reason)
        if self._listener is not None:
            self._listener.finish(None)  # one listener at a time: the newest replaces the older
        stream = self._listener = _Stream()
        stream.on_close = functools.partial(self._unlisten, stream)
        self._deliver_backlog(stream)
        return Reply("sse", stream)

    def _unlisten(self, stream: _Stream) -> None:
        if self._listener is stream:
            self._listener = None
            self._touch()

    # -- child → gateway (the supervisor's LineHandler) -----------------------------------------------

    def on_line(self, child: ChildProcess, line: bytes) -> None:
        if not line.strip():
            return
        try:
            message = parse_message(line, max_depth=self._up.max_json_depth)
        except MalformedRequest as exc:
            # Servers sometimes print junk (a banner, a stray print): skip it, the next line may be fine.
            if child.junk_budget.allow():
                excerpt = line[:LOG_LINE_CHARS]
                logger.warning("%s[%d]: skipped a stdout line (%s): %r", self._up.name, child.pid, exc.reason, excerpt)
            return
        if message.kind == "response":
            self._on_response(message)
        elif message.kind == "request":
            self._on_server_request(message)
        elif message.method == "notifications/progress":
            self._on_progress(message)
        elif message.method == "notifications/cancelled":
            self._on_child_cancelled(message)
        else:
            self._route(Event(line, message))

    async def on_start(self, child: ChildProcess, restarted: bool) -> None:
        if not (restarted and self._replay and self._initialize is not None):
            return
        # Replay the session into the fresh child under the gateway's own id, and swallow the answer.
        uid = next(self._ids)
        answer: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        pending = _Pending(uid, uid, "initialize", self._initialize, child, internal=answer)
        self._register(pending)
        try:
            request: JSONObject = {"jsonrpc": "2.0", "id": uid, "method": "initialize", "params": self._initialize}
            await child.write(orjson.dumps(request))
            reply = await answer
        finally:
            self._forget(pending)
        if reply.is_error:
            raise UpstreamError(f"{self._up.name}: the restarted child refused initialize", reason="upstream_crashed")
        if self._initialized:
            await child.write(orjson.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))

    def on_exit(self, error: UpstreamError, final: bool) -> None:
        for pending in list(self._pending.values()):
            self._forget(pending)
            if pending.internal is not None:
                pending.internal.cancel()
            else:
                pending.stream.finish(UpstreamError(error.detail, reason=error.reason))
        # The new child never sent these requests: the client's answers would have nowhere to go.
        self._server_requests.clear()
        if final and self._listener is not None:
            self._listener.finish(None)
            self._listener = None

    def _on_response(self, message: Message) -> None:
        uid = message.id
        pending = self._pending.get(uid) if isinstance(uid, int) else None
        if pending is None or not self._forget(pending):
            logger.info("%s: dropped a response for unknown request id %r", self._up.name, uid)
            return
        if pending.internal is not None:
            if not pending.internal.done():
                pending.internal.set_result(message)
            return
        if pending.method == "initialize" and not message.is_error:
            self._initialize = pending.params  # the session exists now: a restarted child gets it replayed
        raw: JSONObject = {**message.raw, "id": pending.client_id}
        pending.stream.finish(Event(orjson.dumps(raw), Message("response", raw, pending.client_id, None)))

    def _on_progress(self, message: Message) -> None:
        token = message.params.get("progressToken")
        pending = self._tokens.get(token) if isinstance(token, str) else None
        if pending is None:
            logger.debug("%s: dropped progress for unknown token %r", self._up.name, token)
            return
        raw: JSONObject = {**message.raw, "params": {**message.params, "progressToken": pending.client_token}}
        if not pending.stream.put(Event(orjson.dumps(raw), Message("notification", raw, None, message.method))):
            logger.debug("%s: dropped progress for a slow reader", self._up.name)

    def _on_server_request(self, message: Message) -> None:
        assert message.id is not None  # a request, by classification
        gid = next(_gateway_ids)
        self._server_requests[gid] = message.id
        if len(self._server_requests) > SERVER_REQUESTS_LIMIT:
            oldest = next(iter(self._server_requests))
            del self._server_requests[oldest]
            logger.warning("%s: forgot unanswered server request %d", self._up.name, oldest)
        raw: JSONObject = {**message.raw, "id": gid}
        self._route(Event(orjson.dumps(raw), Message("request", raw, gid, message.method)))

    def _on_child_cancelled(self, message: Message) -> None:
        # The child gave up on one of its own requests: name it by the id the client was given.
        child_id = message.params.get("requestId")
        gid = next((g for g, c in self._server_requests.items() if _same_id(c, child_id)), None)
        if gid is None:
            logger.debug("%s: dropped a cancellation of unknown server request %r", self._up.name, child_id)
            return
        del self._server_requests[gid]
        raw: JSONObject = {**message.raw, "params": {**message.params, "requestId": gid}}
        self._route(Event(orjson.dumps(raw), Message("notification", raw, None, message.method)))

    def _route(self, event: Event) -> None:
        live = [p for p in self._pending.values() if p.internal is None]
        if len(live) == 1:
            stream = live[0].stream
        elif self._listener is not None:
            stream = self._listener
        elif live:
            stream = live[-1].stream  # dicts keep insertion order: the most recently started request
        else:
            if len(self._backlog) >= BACKLOG:
                self._backlog.popleft()
                logger.debug("%s: no stream open; dropped the oldest unsolicited message", self._up.name)
            self._backlog.append(event)
            return
        if not stream.put(event):
            logger.debug("%s: dropped a message for a slow reader", self._up.name)

    def _deliver_backlog(self, stream: _Stream) -> None:
        while self._backlog:
            stream.put(self._backlog.popleft())

    # -- idleness (per-principal children only) -------------------------------------------------------

    def _touch(self) -> None:
        if self._on_idle is None:
            return
        if self._idle is not None:
            self._idle.cancel()
        self._idle = asyncio.get_running_loop().call_later(self._up.idle_seconds, self._check_idle)

    def _check_idle(self) -> None:
        self._idle = None
        # Still in use: the request's end (``_forget``) or the send's end re-arms the timer.
        if self._on_idle is not None and not (self._pending or self._busy or self._listener):
            self._on_idle(self)


def _progress_token(params: JSONObject) -> str | int | None:
    meta = params.get("_meta")
    token = meta.get("progressToken") if isinstance(meta, dict) else None
    return token if isinstance(token, str | int) and not isinstance(token, bool) else None


def _with_token(params: JSONObject, token: str) -> JSONObject:
    meta = params["_meta"]
    assert isinstance(meta, dict)  # checked by _progress_token
    return {**params, "_meta": {**meta, "progressToken": token}}


def _same_id(ours: RequestId, theirs: object) -> bool:
    # type() too: JSON-RPC ids 1 and "1" differ, and True == 1 in Python.
    return type(ours) is type(theirs) and ours == theirs


class StdioUpstream:
    """A local MCP server run as child processes: one per gateway session, one per principal (modern era)."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path | None,
        max_message_bytes: int,
        max_json_depth: int,
        request_timeout: float,
        restart_backoff: Sequence[float] = DEFAULT_BACKOFF,
        idle_seconds: float = 600,
    ) -> None:
        if not command:
            raise ConfigError(f"upstream {name}: the command is empty")
        self.name = name
        self.command = tuple(command)
        self.env = dict(env)
        self.cwd = cwd
        self.max_message_bytes = max_message_bytes
        self.max_json_depth = max_json_depth
        self.request_timeout = request_timeout
        self.restart_backoff = tuple(restart_backoff)
        self.idle_seconds = idle_seconds
        self._sessions: set[_Link] = set()
        self._principals: dict[str, _Link] = {}
        self._reaping: set[asyncio.Task[None]] = set()
        self._closed = False

    async def start(self) -> None:
        """Fail at startup, naming the command, when the program cannot be found (as the child would find it)."""
        program = self.command[0]
        if os.sep in program:
            found = (self.cwd or Path.cwd()) / program
            usable = os.access(found, os.X_OK) and found.is_file()
        else:
            usable = shutil.which(program, path=child_environment(self.env)["PATH"]) is not None
        if not usable:
            raise ConfigError(f"upstream {self.name}: command {program!r} not found or not executable")

    async def aclose(self) -> None:
        self._closed = True
        links = [*self._sessions, *self._principals.values()]
        self._sessions.clear()
        self._principals.clear()
        await asyncio.gather(*(link.aclose() for link in links), *self._reaping)

    async def open_session(self, principal: Principal) -> Channel:
        self._check_open()
        link = _Link(self, replay=True, on_idle=None)
        self._sessions.add(link)
        return StdioSessionChannel(self, link)

    async def stateless(self, principal: Principal) -> Channel:
        self._check_open()
        return StdioPrincipalChannel(self, principal.key)

    def principal_link(self, key: str) -> _Link:
        """The principal's child; a fresh one after an idle reap, or after a crash loop broke the last one
        (the modern era has no session to lose, so a new request deserves a new attempt)."""
        self._check_open()
        link = self._principals.get(key)
        if link is None or link.broken:
            if link is not None:
                self._reap(key, link)
            link = self._principals[key] = _Link(self, replay=False, on_idle=functools.partial(self._reap, key))
        return link

    async def release_session(self, link: _Link) -> None:
        self._sessions.discard(link)
        await link.aclose()

    def _reap(self, key: str, link: _Link) -> None:
        if self._principals.get(key) is link:
            del self._principals[key]
        task = asyncio.get_running_loop().create_task(link.aclose())
        self._reaping.add(task)
        task.add_done_callback(self._reaping.discard)

    def _check_open(self) -> None:
        if self._closed:
            raise UpstreamError(f"upstream {self.name} is closed", reason="upstream_closed")


class StdioSessionChannel:
    """A handshake-era session: its own child, replayed after a crash, stopped when the session ends."""

    def __init__(self, upstream: StdioUpstream, link: _Link) -> None:
        self._upstream = upstream
        self._link = link

    async def send(self, message: Message, data: bytes, headers: Mapping[str, str]) -> Reply:
        # ``data`` is not forwarded as is: ids are rewritten, and a client's pretty-printed JSON may hold
        # newlines, which would split the message on the stdio wire.
        return await self._link.send(message)

    async def listen(self, headers: Mapping[str, str]) -> Reply:
        return self._link.listen()

    async def aclose(self) -> None:
        await self._upstream.release_session(self._link)


class StdioPrincipalChannel:
    """The modern-era channel of one principal: requests go to that principal's shared child."""

    def __init__(self, upstream: StdioUpstream, key: str) -> None:
        self._upstream = upstream
        self._key = key

    async def send(self, message: Message, data: bytes, headers: Mapping[str, str]) -> Reply:
        return await self._upstream.principal_link(self._key).send(message)

    async def listen(self, headers: Mapping[str, str]) -> Reply:
        raise MethodNotAllowed("the modern era has no server-to-client stream", reason="upstream_no_get_stream")

    async def aclose(self) -> None:
        return  # the child is the principal's, not this channel's: it lives until idle or upstream close
