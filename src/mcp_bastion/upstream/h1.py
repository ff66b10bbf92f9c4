"""A lean HTTP/1.1 client connection (RFC 9112) on ``asyncio.Protocol`` and httptools (llhttp).

Why not aiohttp: in the gateway's hop the upstream client was the largest single cost (43 % of the
gateway's CPU per proxied call with aiohttp, see STACK.md); a protocol-level client does the same work for
a fraction of it. This module holds the wire half (one connection, one response); the keep-alive pool that
hands connections out is ``mcp_bastion.upstream.h1pool.H1Pool``.

Scope, deliberately small: one request at a time per connection (no pipelining), ``Content-Length``
request bodies only, no proxies, redirects, cookies, decompression, upgrades, ``Expect: 100-continue``,
HEAD or HTTP/2. Interim 1xx responses (e.g. 103 Early Hints) are skipped.

Exceptions (timeouts are the builtin ``TimeoutError``)::

    H1Error
    ├── ConnectFailed    TCP connect or TLS handshake failed (also: the pool is closed)
    ├── ConnectionLost   the peer closed or reset the connection before the response was complete
    ├── ProtocolError    the peer's bytes are not an acceptable HTTP/1.1 response
    └── BodyTooLarge     ``read(limit)`` saw more than ``limit`` bytes

Invariants:

- a connection carries a request only while its previous response was parsed to the end and both sides
  allowed keep-alive; anything unexpected (bytes while idle, bytes after a response, a parse error, a
  timeout, a response not read to the end) tears the connection down instead of reusing it;
- the response head is bounded (``MAX_HEAD_BYTES``, ``MAX_HEADERS``); the unread body is bounded by
  back-pressure: reading from the socket pauses above ``HIGH_WATER`` buffered bytes;
- every checked-out connection is given back exactly once, by ``H1Response.release`` or ``close``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Final, cast

import httptools

if TYPE_CHECKING:
    from mcp_bastion.upstream.h1pool import H1Pool

MAX_HEAD_BYTES: Final = 65_536
"""Largest response head (status line and header fields) accepted."""
MAX_HEADERS: Final = 100
"""Most header fields accepted in one response head."""
HIGH_WATER: Final = 262_144
"""Unread body bytes above which reading from the socket pauses until the consumer catches up."""


class H1Error(Exception):
    """Base of the HTTP/1.1 client's errors."""


class ConnectFailed(H1Error):
    """The TCP connection or the TLS handshake failed (or the pool is closed)."""


class ConnectionLost(H1Error):
    """The peer closed or reset the connection before the response was complete."""


class ProtocolError(H1Error):
    """The peer sent something that is not an acceptable HTTP/1.1 response."""


class BodyTooLarge(H1Error):
    """The response body is larger than the caller's limit."""


class StaleConnection(ConnectionLost):
    """A reused keep-alive connection was closed by the server before any byte of the response arrived.

    The pool retries such a request once on a fresh connection; callers only ever see it (as a
    ``ConnectionLost``) when the retry met the same fate.
    """


class H1Response:
    """One response: its head, available at once, and a body read with ``read``, ``chunks`` or not at all.

    Give the connection back with ``release`` (pooled again when the body was complete and keep-alive
    allowed, closed otherwise) or tear it down with ``close`` (how a cancelled stream is signalled to the
    upstream). Iterating ``chunks()`` yields body bytes as they arrive, whatever the framing (chunked,
    ``Content-Length`` or until the server closes).
    """

    __slots__ = (
        "_buffered",
        "_chunks",
        "_conn",
        "_done",
        "_error",
        "_headed",
        "_keep_alive",
        "_loop",
        "_pool",
        "_seen",
        "_settled",
        "_timer",
        "_until_close",
        "_waiter",
        "headers",
        "status",
    )

    def __init__(
        self, pool: H1Pool, conn: H1Connection, loop: asyncio.AbstractEventLoop, deadline: float | None
    ) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        """Header fields by lower-cased name; repeated fields joined with ``", "``."""
        self._pool = pool
        self._conn = conn
        self._loop = loop
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._headed = False
        self._done = False
        self._keep_alive = False
        self._until_close = False
        self._seen = False
        self._settled = False
        # One timer per request, not one per read: when the deadline passes, every current and later
        # read raises TimeoutError and the connection is dropped.
        self._timer = loop.call_at(deadline, self._expire) if deadline is not None else None

    @property
    def complete(self) -> bool:
        """True once the whole body has arrived (it may still sit unread in the buffer)."""
        return self._done

    async def read(self, limit: int) -> bytes:
        """The whole body; ``BodyTooLarge`` (and the connection closed) when it exceeds ``limit`` bytes."""
        length = self.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            self.close()
            raise BodyTooLarge(f"Content-Length {length} over the limit of {limit} bytes")
        parts: list[bytes] = []
        size = 0
        while (chunk := await self._next()) is not None:
            size += len(chunk)
            if size > limit:
                self.close()
                raise BodyTooLarge(f"body over the limit of {limit} bytes")
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive (whatever is buffered comes out joined as one piece)."""
        return self

    def __aiter__(self) -> H1Response:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._next()
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    def release(self) -> None:
        """Give the connection back: to the pool if the body is complete and keep-alive holds, else closed."""
        if self._settled:
            return
        self._settled = True
        if self._timer is not None:
            self._timer.cancel()
        self._pool._checkin(self._conn, self._done and self._keep_alive and self._error is None)

    def close(self) -> None:
        """Tear the connection down, whatever state the response is in."""
        if self._settled:
            return
        self._settled = True
        if self._timer is not None:
            self._timer.cancel()
        if not self._done:
            self._fail(ConnectionLost("response closed before its end"))
        self._pool._checkin(self._conn, False)

    # -- consumer side ---------------------------------------------------------------------------------

    async def _next(self) -> bytes | None:
        while True:
            chunks = self._chunks
            if chunks:
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self._buffered = 0
                if self._conn.paused:
                    self._conn.resume()
                return data
            if self._done:
                return None
            if self._error is not None:
                raise self._error
            await self._wait()

    async def _head(self) -> None:
        """Wait for the response head (the pool's part of ``request``)."""
        while not self._headed:
            if self._error is not None:
                raise self._error
            await self._wait()

    async def _wait(self) -> None:
        waiter = self._waiter = self._loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    # -- connection side ---------------------------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: BaseException) -> None:
        if self._error is None and not self._done:
            self._error = error
            self._wake()

    def _finish(self, keep_alive: bool) -> None:
        self._done = True
        self._keep_alive = keep_alive
        self._wake()

    def _expire(self) -> None:
        self._timer = None
        if not self._done:
            self._fail(TimeoutError("upstream request deadline passed"))
        if not self._settled:
            # Also the safety net for a response its caller forgot: the slot cannot leak past the deadline.
            self._settled = True
            self._pool._checkin(self._conn, False)


class H1Connection(asyncio.Protocol):
    """One HTTP/1.1 connection to the upstream; the pool owns it, a response borrows it."""

    __slots__ = (
        "_expect",
        "_head_bytes",
        "_head_size",
        "_headers",
        "_interim",
        "_parser",
        "_pool",
        "alive",
        "idle_since",
        "paused",
        "response",
        "reused",
        "transport",
    )

    def __init__(self, pool: H1Pool) -> None:
        self._pool = pool
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.response: H1Response | None = None
        """The response being received; None while idle and once the current one is complete."""
        self.alive = False
        self.reused = False
        """True once the connection has served a response (a failure before any byte is then "stale")."""
        self.paused = False
        self.idle_since = 0.0
        self._expect = False
        self._interim = False
        self._head_bytes = 0
        self._head_size = 0
        self._headers = 0

    def send(self, response: H1Response, data: bytes) -> None:
        """Start one exchange: ``data`` is the whole request, written with a single ``write``."""
        self.response = response
        self._expect = True
        self._interim = False
        self._head_bytes = self._head_size = self._headers = 0
        transport = self.transport
        if not self.alive or transport is None or transport.is_closing():
            self.response = None
            response._fail(StaleConnection("connection closed while idle") if self.reused else ConnectionLost())
            return
        transport.write(data)

    def abort(self) -> None:
        """Drop the connection now (no graceful TLS shutdown: nobody waits for it)."""
        self.alive = False
        response = self.response
        if response is not None:
            self.response = None
            response._fail(ConnectionLost("connection closed by the client"))
        if self.transport is not None:
            self.transport.abort()

    def resume(self) -> None:
        self.paused = False
        if self.alive and self.transport is not None:
            self.transport.resume_reading()

    # -- asyncio.Protocol ----------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio's classes; they have the same methods.
        self.transport = cast(asyncio.Transport, transport)
        self.alive = True

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:
            # Bytes nobody asked for (while idle, or after a complete response): the connection's state is
            # unknown, so it must never carry another request.
            self.abort()
            return
        response._seen = True
        headed = response._headed
        if not headed:
            self._head_bytes += len(data)
        error: BaseException
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            context = exc.__context__
            error = context if isinstance(context, H1Error) else ProtocolError(f"invalid response: {exc}")
        except httptools.HttpParserUpgrade:
            error = ProtocolError("the server switched protocols")
        except httptools.HttpParserError as exc:
            error = ProtocolError(f"invalid response: {exc}")
        else:
            if headed or response._headed or self._head_bytes <= MAX_HEAD_BYTES:
                return
            error = ProtocolError(f"response head over {MAX_HEAD_BYTES} bytes")
        response._fail(error)
        self.abort()

    def eof_received(self) -> bool | None:
        response = self.response
        if response is not None and response._headed and response._until_close:
            # A body without Content-Length or chunked framing ends when the server closes (RFC 9112 §6.3).
            self.response = None
            response._finish(False)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        response = self.response
        if response is not None:
            self.response = None
            why = "the server closed the connection" if exc is None else f"{type(exc).__name__}: {exc}"
            if not response._seen and self.reused:
                response._fail(StaleConnection(f"kept-alive connection lost before the response: {why}"))
            else:
                response._fail(ConnectionLost(f"connection lost mid-response: {why}"))
        self._pool._lost(self)

    # -- httptools callbacks (they run inside feed_data) ------------------------------------------------

    def on_message_begin(self) -> None:
        if not self._expect:
            raise ProtocolError("a response nobody asked for")
        self._expect = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers += 1
        self._head_size += len(name) + len(value) + 4
        if self._headers > MAX_HEADERS:
            raise ProtocolError(f"more than {MAX_HEADERS} header fields")
        if self._head_size > MAX_HEAD_BYTES:
            raise ProtocolError(f"response head over {MAX_HEAD_BYTES} bytes")
        headers = cast(H1Response, self.response).headers
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = headers.get(key)
        headers[key] = text if previous is None else f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        response = cast(H1Response, self.response)
        parser = self._parser
        status = parser.get_status_code()
        if parser.get_http_version() not in ("1.1", "1.0"):
            raise ProtocolError(f"not an HTTP/1.x response (version {parser.get_http_version()})")
        if status < 200:
            if status == 101:
                raise ProtocolError("the server switched protocols")
            # An interim response (100 Continue, 103 Early Hints): forget it, the final one follows.
            self._interim = True
            response.headers.clear()
            return
        response.status = status
        headers = response.headers
        response._until_close = (
            "content-length" not in headers
            and "chunked" not in headers.get("transfer-encoding", "").lower()
            and status not in (204, 304)
        )
        response._headed = True
        response._wake()

    def on_body(self, body: bytes) -> None:
        response = cast(H1Response, self.response)
        response._chunks.append(body)
        response._buffered += len(body)
        if response._buffered > HIGH_WATER and not self.paused:
            self.paused = True
            cast(asyncio.Transport, self.transport).pause_reading()
        response._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            self._expect = True
            return
        response = cast(H1Response, self.response)
        self.response = None
        response._finish(self._parser.should_keep_alive())
