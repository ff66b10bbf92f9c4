"""The keep-alive connection pool of the HTTP/1.1 client: one pool per upstream origin, for the process lifetime.

``H1Pool.request`` writes a request on an idle pooled connection or a new one and returns the
``H1Response`` once its head has arrived; the wire half lives in ``mcp_bastion.upstream.h1``.

Slots: at most ``max_connections`` connections exist at once (connecting, busy or idle). A request that
finds none free waits in line, at most ``connect_timeout`` seconds, then gets ``TimeoutError``. A slot
travels with its connection: a released connection goes straight to the first waiter (or the idle list);
a closed one hands its slot to the first waiter, who connects anew.

Idle connections are taken newest first (the oldest ones age out: one timer per pool closes those idle
longer than ``idle_seconds``); one the server closed while idle is noticed (EOF) and dropped unused.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import Sequence
from typing import Final

from mcp_bastion.upstream.h1 import (
    ConnectFailed,
    H1Connection,
    H1Response,
    StaleConnection,
)

_NO_BODY_METHODS: Final = frozenset({"GET", "DELETE", "OPTIONS", "TRACE"})
"""Methods whose empty request body goes without ``Content-Length`` (RFC 9110 §8.6)."""
_PREFIX_CACHE: Final = 64


class H1Pool:
    """Keep-alive HTTP/1.1 connections to one origin (the upstream), bounded by ``max_connections``."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None,
        server_hostname: str | None,
        connect_timeout: float,
        max_connections: int = 256,
        idle_seconds: float = 60.0,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._host = host
        self._port = port
        self._ssl = ssl_context
        self._server_hostname = server_hostname if ssl_context is not None else None
        self._connect_timeout = connect_timeout
        self._max = max_connections
        self._idle_seconds = idle_seconds
        authority = f"[{host}]" if ":" in host else host
        if port != (443 if ssl_context is not None else 80):
            authority += f":{port}"
        try:
            encoded = authority.encode("ascii")
        except UnicodeEncodeError:
            encoded = authority.encode("idna")
        self._host_line = b"host: " + encoded + b"\r\n"
        self._prefixes: dict[tuple[str, str], tuple[bytes, bool]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: dict[H1Connection, None] = {}
        """Idle connections, oldest first (a dict as an ordered set: O(1) removal when one is lost)."""
        self._conns: set[H1Connection] = set()
        self._count = 0
        """Slots in use: connections connecting, busy or idle."""
        self._waiters: deque[asyncio.Future[H1Connection | None]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    async def request(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        *,
        deadline: float | None = None,
    ) -> H1Response:
        """Send one request and return the response once its head is in.

        ``headers`` must not include Host or Content-Length (added here). ``deadline`` (event loop time)
        bounds everything: waiting for a slot, connecting, the head, and every later read of the body.
        Raises ``H1Error`` subclasses, or ``TimeoutError``.
        """
        data = self._encode(method, target, headers, body)
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        conn = await self._acquire(deadline)
        try:
            return await self._exchange(conn, loop, data, deadline)
        except StaleConnection:
            if not conn.reused:
                raise
        # The server closed a kept-alive connection just as we used it (its idle timeout crossed our
        # write). No byte of a response came back, so the request is sent again, once, on a fresh
        # connection, as HTTP clients do. The small risk: a server that processed the request and then
        # closed without answering sees a POST twice.
        conn = await self._acquire(deadline, fresh=True)
        return await self._exchange(conn, loop, data, deadline)

    async def aclose(self) -> None:
        """Close every connection (responses in flight fail with ``ConnectionLost``) and refuse new requests."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectFailed("connection pool closed"))
        self._idle.clear()
        for conn in list(self._conns):
            conn.abort()
        # Let the transports run their connection_lost callbacks (and close their sockets) now.
        for _ in range(5):
            if not self._conns:
                break
            await asyncio.sleep(0)

    # -- one exchange --------------------------------------------------------------------------------

    async def _exchange(
        self, conn: H1Connection, loop: asyncio.AbstractEventLoop, data: bytes, deadline: float | None
    ) -> H1Response:
        response = H1Response(self, conn, loop, deadline)
        conn.send(response, data)
        try:
            await response._head()
        except BaseException:
            response.close()
            raise
        return response

    def _encode(self, method: str, target: str, headers: Sequence[tuple[bytes, bytes]], body: bytes) -> bytes:
        cached = self._prefixes.get((method, target))
        if cached is None:
            cached = self._prefix(method, target)
        prefix, length_always = cached
        parts = [prefix]
        for name, value in headers:
            # Values come from the gateway (and, for forwarded ones, from a parsed client request); a CR
            # or LF here would let a header smuggle a second request into the connection.
            if b"\n" in value or b"\r" in value or b"\n" in name or b"\r" in name:
                raise ValueError(f"header {name!r} contains a line break")
            parts += (name, b": ", value, b"\r\n")
        if body or length_always:
            parts.append(b"content-length: %d\r\n\r\n" % len(body))
            parts.append(body)
        else:
            parts.append(b"\r\n")
        return b"".join(parts)

    def _prefix(self, method: str, target: str) -> tuple[bytes, bool]:
        if not method.isalpha() or not method.isupper() or method == "HEAD":
            raise ValueError(f"unsupported method {method!r}")
        if not target.startswith("/") or not target.isascii() or any(c <= " " or c == "\x7f" for c in target):
            raise ValueError(f"request target must be an ASCII origin-form path: {target!r}")
        entry = (f"{method} {target} HTTP/1.1\r\n".encode("ascii") + self._host_line, method not in _NO_BODY_METHODS)
        if len(self._prefixes) < _PREFIX_CACHE:
            self._prefixes[(method, target)] = entry
        return entry

    # -- slots and connections -----------------------------------------------------------------------

    async def _acquire(self, deadline: float | None, *, fresh: bool = False) -> H1Connection:
        if self._closed:
            raise ConnectFailed("connection pool closed")
        idle = self._idle
        if idle and not fresh:
            conn = idle.popitem()[0]
            if conn.alive and conn.idle_since + self._idle_seconds > self._now():
                return conn
            conn.abort()  # aged out: its slot is ours now
            return await self._connect(deadline)
        if self._count < self._max:
            self._count += 1
            return await self._connect(deadline)
        if idle:
            # A fresh connection was asked for while every slot is taken: the oldest idle one gives way.
            conn = next(iter(idle))
            del idle[conn]
            conn.abort()
            return await self._connect(deadline)
        granted = await self._wait_for_slot(deadline)
        if granted is not None and granted.alive and not fresh:
            return granted
        if granted is not None:
            granted.abort()
        return await self._connect(deadline)

    async def _wait_for_slot(self, deadline: float | None) -> H1Connection | None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[H1Connection | None] = loop.create_future()
        self._waiters.append(waiter)
        when = loop.time() + self._connect_timeout
        try:
            async with asyncio.timeout_at(when if deadline is None else min(when, deadline)):
                return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                # Granted just as we gave up: pass the grant on rather than leak the slot.
                granted = waiter.result()
                if granted is None:
                    self._free_slot()
                else:
                    self._checkin(granted, True)
            else:
                waiter.cancel()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    async def _connect(self, deadline: float | None) -> H1Connection:
        """Open a connection in a slot the caller holds; the slot is freed if this fails."""
        loop = asyncio.get_running_loop()
        when = loop.time() + self._connect_timeout
        try:
            async with asyncio.timeout_at(when if deadline is None else min(when, deadline)):
                _, conn = await loop.create_connection(
                    lambda: H1Connection(self),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._server_hostname,
                )
        except BaseException as exc:
            self._free_slot()
            if isinstance(exc, OSError) and not isinstance(exc, TimeoutError):
                raise ConnectFailed(f"{self._host}:{self._port}: {type(exc).__name__}: {exc}") from exc
            raise
        if self._closed:
            conn.abort()
            self._free_slot()
            raise ConnectFailed("connection pool closed")
        self._conns.add(conn)
        return conn

    def _checkin(self, conn: H1Connection, reusable: bool) -> None:
        """A response is done with its connection: pool it again or close it, and pass its slot on."""
        if reusable and conn.alive and not self._closed:
            conn.reused = True
            if conn.paused:
                conn.resume()
            while self._waiters:
                waiter = self._waiters.popleft()
                if not waiter.done():
                    waiter.set_result(conn)
                    return
            conn.idle_since = self._now()
            self._idle[conn] = None
            if self._sweeper is None:
                self._schedule_sweep()
            return
        if conn.alive:
            conn.abort()
        self._free_slot()

    def _free_slot(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot moves to the waiter, who connects
                return
        self._count -= 1

    def _lost(self, conn: H1Connection) -> None:
        """A connection closed (called from ``connection_lost``): an idle one gives its slot back here."""
        self._conns.discard(conn)
        if conn in self._idle:
            del self._idle[conn]
            self._free_slot()

    def _now(self) -> float:
        loop = self._loop
        return loop.time() if loop is not None else asyncio.get_running_loop().time()

    def _schedule_sweep(self) -> None:
        if self._idle and self._loop is not None:
            oldest = next(iter(self._idle))
            self._sweeper = self._loop.call_at(oldest.idle_since + self._idle_seconds, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        now = self._now()
        idle = self._idle
        while idle:
            conn = next(iter(idle))
            if conn.idle_since + self._idle_seconds > now:
                break
            del idle[conn]
            conn.abort()
            self._free_slot()
        self._schedule_sweep()
