"""Carrying one allowed egress connection once the origin is open: bytes both ways for a CONNECT tunnel;
for a plain request, the rest of its body up and the origin's response down. It keeps the connection's
audit record current as bytes move (``Meter``) and says how the connection ended.

Invariants:
- a plain request's body goes up framed by the proxy, and nothing after its end: a pipelined or smuggled
  second request is never parsed into it (``Request.feed``) and never forwarded;
- the response's status is read from its first ``STATUS_BYTES`` bytes only, never from the body, and
  interim 1xx responses are skipped;
- a connection on which no byte moves either way for ``idle_timeout`` seconds ends (``idle_timeout``);
- a tunnel ends when both directions have; a plain request when the origin's answer has (a client that
  half-closes after its body still gets the answer).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Final, Literal, Protocol

import httptools

from mcp_bastion.sandbox.egressrequest import Plan, Request

__all__ = ["READ_SIZE", "STATUS_BYTES", "Meter", "Relay", "ResponseStatus", "Streams"]

READ_SIZE: Final = 65_536
"""Bytes read from a socket at a time (and so the most body a single read can buffer)."""
STATUS_BYTES: Final = 16_384
"""How much of a response's beginning is parsed for its status: interim responses and the final status
line must start within it."""

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Meter(Protocol):
    """The parts of a connection's audit record that the relay fills in."""

    status: int | None
    bytes_up: int
    bytes_down: int
    last: float
    """Loop time of the last byte moved, for the idle timeout."""


class _Idle(Exception):
    """No byte moved either way for ``idle_timeout`` seconds."""


class ResponseStatus:
    """The status of a response, from httptools callbacks on its first ``STATUS_BYTES`` bytes: the final
    status (interim ``100 Continue`` or ``103 Early Hints`` skipped), or the last interim one when the
    final one does not start within those bytes; None when they hold no status line."""

    def __init__(self) -> None:
        self.code: int | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._left = STATUS_BYTES
        self._final = False

    def feed(self, data: bytes) -> None:
        if self._final or self._left <= 0:
            return
        data = data[: self._left]
        self._left -= len(data)
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self._left = 0  # not HTTP, or a switch to another protocol: there is nothing more to learn

    def on_status(self, _: bytes) -> None:
        self._note()

    def on_headers_complete(self) -> None:
        self._note()  # a status line without a reason phrase gets no on_status

    def _note(self) -> None:
        if not self._final:
            self.code = self._parser.get_status_code()
            self._final = not 100 <= self.code < 200 or self.code == 101  # 101: what follows is not HTTP


class Relay:
    """The client's and the origin's streams of one allowed connection, and its record."""

    def __init__(self, client: Streams, origin: Streams, meter: Meter, *, idle_timeout: float) -> None:
        self._client = client
        self._origin = origin
        self._meter = meter
        self._idle_timeout = idle_timeout

    async def carry(self, plan: Plan, request: Request) -> str:
        """Confirm a tunnel, send the origin ``plan.first``, then relay until the connection ends; how it
        ended: ``closed``, ``reset``, ``idle_timeout`` or ``bad_request_body``."""
        (client_reader, client), (origin_reader, origin) = self._client, self._origin
        if plan.tunnel:
            client.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            self._meter.status = 200
        self._send(origin, plan.first)
        if plan.tunnel:
            up = self._pump(client_reader, origin, "bytes_up")
            return await self._both(up, self._pump(origin_reader, client, "bytes_down"))
        body = self._send_body(client_reader, request, chunked=plan.chunked)
        down = self._pump(origin_reader, client, "bytes_down", status=ResponseStatus())
        return await self._both(body, down, until_down=True)

    def _send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        if data:
            writer.write(data)
            self._meter.bytes_up += len(data)

    async def _read(self, reader: asyncio.StreamReader) -> bytes:
        """The next bytes from ``reader``; ``_Idle`` once nothing has moved either way for too long."""
        loop = asyncio.get_running_loop()
        while True:
            wait = self._meter.last + self._idle_timeout - loop.time()
            if wait <= 0:
                raise _Idle
            scope = asyncio.timeout(wait)
            try:
                async with scope:
                    data = await reader.read(READ_SIZE)
            except TimeoutError:
                if scope.expired():
                    continue  # the other direction may have moved meanwhile
                raise
            self._meter.last = loop.time()
            return data

    async def _drain(self, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(self._idle_timeout):
                await writer.drain()
        except TimeoutError as exc:
            raise _Idle from exc

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        counter: Literal["bytes_up", "bytes_down"],
        *,
        status: ResponseStatus | None = None,
    ) -> None:
        """Copy until end of file, then half-close ``writer``; ``status`` reads the response's status."""
        while data := await self._read(reader):
            if status is not None:
                status.feed(data)
                self._meter.status = status.code
            writer.write(data)
            setattr(self._meter, counter, getattr(self._meter, counter) + len(data))
            await self._drain(writer)
        if writer.can_write_eof():
            writer.write_eof()

    async def _send_body(self, reader: asyncio.StreamReader, request: Request, *, chunked: bool) -> None:
        """Forward the request body, re-framed, and nothing after it."""
        origin = self._origin[1]
        while True:
            for piece in filter(None, request.body):  # an empty chunk would end a chunked body
                self._send(origin, b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
            request.body.clear()
            if request.complete:
                self._send(origin, b"0\r\n\r\n" if chunked else b"")
                await self._drain(origin)
                return
            await self._drain(origin)
            data = await self._read(reader)
            if not data:
                return
            request.feed(data)

    async def _both(
        self, up: Coroutine[Any, Any, None], down: Coroutine[Any, Any, None], *, until_down: bool = False
    ) -> str:
        """Run both directions; end when both finish (or only ``down``, with ``until_down``), or either
        fails. Returns how the connection ended."""
        tasks = [asyncio.create_task(up), asyncio.create_task(down)]
        pending = set(tasks)
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                failed = any(not task.cancelled() and task.exception() is not None for task in done)
                if failed or (tasks[1] in done and until_down):
                    break
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        errors = [task.exception() for task in tasks if task.done() and not task.cancelled()]
        error = next((exc for exc in errors if exc is not None), None)
        if error is None:
            return "closed"
        if isinstance(error, _Idle):
            return "idle_timeout"
        if isinstance(error, OSError | httptools.HttpParserError):
            return "reset" if isinstance(error, OSError) else "bad_request_body"
        raise error
