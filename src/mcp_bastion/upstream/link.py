"""One child's JSON-RPC link: id and progress-token mapping, routing of child messages, cancellation.

A ``Link`` owns one supervised child (``upstream.process``) and the tables of the messages crossing its
pipes; ``upstream.stdio`` decides how many links there are and who shares them (one per handshake-era
session, or one per principal in the modern era).

Ids: a request gets a fresh integer id from the link's counter; the table upstream id → pending request
restores the client's id on the response. Progress tokens become unique upstream tokens and are restored on
``notifications/progress``; a client's ``notifications/cancelled`` is translated to the upstream id, and a
reader that leaves (or a request that times out) sends one to the child. Requests from a child (sampling,
elicitation, roots, ping) get a process-wide gateway id before they reach a client, so two children never
collide on one client-facing stream; the client's answer is mapped back.

The stdio wire has no "related request", so other child messages go to the only in-flight request's
stream, else the listen (GET) stream, else the latest in-flight request's stream, else a backlog of
``BACKLOG`` messages (oldest dropped) handed to the next stream that opens.

After a restart, a link that replays (handshake era) sends the remembered ``initialize`` (and
``notifications/initialized``) to the fresh child under its own id and swallows the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
from collections import deque
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

import orjson

from mcp_bastion.errors import MalformedRequest, UpstreamError, UpstreamTimeout
from mcp_bastion.jsonrpc.message import JSONObject, Message, RequestId, parse_message
from mcp_bastion.upstream.base import Event, Reply, no_events
from mcp_bastion.upstream.process import LOG_LINE_CHARS, ChildProcess, Supervisor, logger

if TYPE_CHECKING:
    from mcp_bastion.sandbox.launch import Sandbox

BACKLOG: Final = 100
"""Unsolicited child messages kept while no stream is open to carry them."""

STREAM_LIMIT: Final = 1000
"""Events queued on one stream for a slow reader before further notifications are dropped (never the end)."""

SERVER_REQUESTS_LIMIT: Final = 1000
"""Unanswered child→client requests remembered per child; the oldest is forgotten beyond this."""

_gateway_ids = itertools.count(1)
"""Ids of child→client requests as clients see them: unique across every child of this process."""


class LinkSettings(Protocol):
    """What a link reads from its upstream's configuration (``StdioUpstream`` provides it)."""

    @property
    def name(self) -> str: ...
    @property
    def command(self) -> Sequence[str]: ...
    @property
    def env(self) -> Mapping[str, str]: ...
    @property
    def cwd(self) -> Path | None: ...
    @property
    def max_message_bytes(self) -> int: ...
    @property
    def max_json_depth(self) -> int: ...
    @property
    def request_timeout(self) -> float: ...
    @property
    def restart_backoff(self) -> Sequence[float]: ...
    @property
    def idle_seconds(self) -> float: ...
    @property
    def sandbox(self) -> Sandbox | None:
        """Sandboxed children are killed when a request outlives its wall-clock budget (``request_timeout``)."""


class EventStream:
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

    def __aiter__(self) -> EventStream:
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
class Pending:
    """One request sent to a child and not yet answered."""

    client_id: RequestId
    upstream_id: int
    method: str
    params: JSONObject
    child: ChildProcess
    stream: EventStream = field(default_factory=EventStream)
    client_token: str | int | None = None
    upstream_token: str | None = None
    timer: asyncio.TimerHandle | None = None
    internal: asyncio.Future[Message] | None = None
    """Set for the gateway's own requests (the replayed ``initialize``): the answer goes here, not to a client."""


class Link:
    """One supervised child and the id, token and routing tables of the messages crossing its pipes."""

    def __init__(self, up: LinkSettings, *, replay: bool, on_idle: Callable[[Link], None] | None) -> None:
        self._up = up
        self._replay = replay
        self._on_idle = on_idle
        self._ids = itertools.count(1)
        self._pending: dict[int, Pending] = {}
        self._tokens: dict[str, Pending] = {}
        self._server_requests: dict[int, RequestId] = {}
        """Gateway id → the child's own id, for child→client requests awaiting the client's answer."""
        self._listener: EventStream | None = None
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
            up.name,
            up.command,
            env=up.env,
            cwd=up.cwd,
            limit=up.max_message_bytes,
            write_timeout=up.request_timeout,
            sandbox=up.sandbox,
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
        pending = Pending(message.id, uid, message.method, message.params, child)
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

    def _register(self, pending: Pending) -> None:
        self._pending[pending.upstream_id] = pending
        loop = asyncio.get_running_loop()
        pending.timer = loop.call_later(self._up.request_timeout, self._expire, pending)
        if pending.internal is None and self._listener is None:
            self._deliver_backlog(pending.stream)

    def _forget(self, pending: Pending) -> bool:
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

    def _abandon(self, pending: Pending, reason: str) -> None:
        """The reader left before the answer: forget the request and tell the child to stop working on it."""
        if self._forget(pending):
            self._background(self._cancel_upstream(pending, reason))

    def _expire(self, pending: Pending) -> None:
        if not self._forget(pending):
            return
        error = UpstreamTimeout(f"{self._up.name}: no answer to {pending.method} in {self._up.request_timeout} s")
        if pending.internal is not None:
            if not pending.internal.done():
                pending.internal.set_exception(error)
            return
        pending.stream.finish(error)
        if self._up.sandbox is not None:
            # The call's wall-clock budget is spent: the server is stopped, not asked (it may not listen).
            logger.warning("%s: child %d killed: %s", self._up.name, pending.child.pid, error.detail)
            pending.child.kill()
            return
        self._background(self._cancel_upstream(pending, "timed out"))

    async def _cancel_upstream(self, pending: Pending, reason: str) -> None:
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
        stream = self._listener = EventStream()
        stream.on_close = functools.partial(self._unlisten, stream)
        self._deliver_backlog(stream)
        return Reply("sse", stream)

    def _unlisten(self, stream: EventStream) -> None:
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
        pending = Pending(uid, uid, "initialize", self._initialize, child, internal=answer)
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
        # The new child never sent these requests: the client's answers would have nowhere to go, and
        # buffered requests from the dead child must not reach a client either.
        self._server_requests.clear()
        self._backlog = deque(e for e in self._backlog if e.message is None or e.message.kind != "request")
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

    def _deliver_backlog(self, stream: EventStream) -> None:
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
