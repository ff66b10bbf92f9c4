"""uvicorn's httptools protocol with ``scope["extensions"]["tls"]``, a header timeout and a head limit.

The production protocol (llhttp is the fastest parser uvicorn offers). httptools puts no bound on a
request head: it buffers a header line of any length until it ends. Two checks bound it here:

- per parsed piece (request target, each complete header field), exact, so a complete oversized head
  that arrives in one read is refused before the app is called;
- per read while a head is still incomplete, counting the bytes received since the head began, so a
  header that never ends cannot grow the buffer past the limit.

Pin note: relies on uvicorn 0.54 internals — ``self.app``, ``self.loop``, ``self.transport``, the
parser callbacks ``on_message_begin``/``on_url``/``on_header``/``on_headers_complete``,
``send_400_response``, and uvicorn answering ``httptools.HttpParserError`` (a callback that raises
surfaces as one) with a 400 and a close. ``tests/tls`` covers each.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from mcp_bastion.tls.headguard import (
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_HEAD_BYTES,
    HEAD_TOO_LARGE,
    HeadDeadline,
    Refusal,
    peer_of,
)
from mcp_bastion.tls.peercert import read_tls_info, with_tls


class _HeadTooLarge(Exception):
    """Raised from a parser callback; httptools turns it into ``HttpParserCallbackError`` -> 400."""


class TLSHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's ``HttpToolsProtocol`` plus TLS facts in the scope, a header timeout and a head limit."""

    header_timeout: ClassVar[float | None] = DEFAULT_HEADER_TIMEOUT
    """Seconds until a connection whose request head is incomplete is aborted; ``None`` disables."""
    max_head_bytes: ClassVar[int] = DEFAULT_MAX_HEAD_BYTES
    """Largest request head accepted."""
    refusal_hooks: ClassVar[tuple[Refusal, ...]] = ()
    """Told about connections refused before the app is called (for the audit log)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._deadline: HeadDeadline | None = None
        self._in_head = False
        self._head_parsed = 0
        """Bytes of the current head's target and complete header fields."""
        self._head_received = 0
        """Bytes read since the current head began, counted while it is incomplete (an upper bound)."""

    @classmethod
    def configured(
        cls, *, header_timeout: float | None, max_head_bytes: int, on_refusal: Refusal | None = None
    ) -> type[TLSHttpToolsProtocol]:
        """A subclass carrying these limits: uvicorn instantiates the class itself, so they live on it."""
        limits = {"header_timeout": header_timeout, "max_head_bytes": max_head_bytes}
        return type(cls.__name__, (cls,), {**limits, "refusal_hooks": (on_refusal,) if on_refusal else ()})

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Arming here also catches a client that connects and never sends a byte.
        self._deadline = HeadDeadline(self.loop, transport, self.header_timeout, self._report)
        self._deadline.arm()
        info = read_tls_info(transport)
        if info is not None:
            self.app = with_tls(self.app, info)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self._in_head or self.transport.is_closing():
            return
        self._head_received += len(data)
        if self._head_received > self.max_head_bytes:
            self._refused()
            self.send_400_response(HEAD_TOO_LARGE)

    def _report(self, reason: str, peer: str) -> None:
        for hook in self.refusal_hooks:
            hook(reason, peer)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.disarm()
        super().connection_lost(exc)

    # Parser callbacks, called from inside super().data_received().

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_parsed, self._head_received = True, 0, 0
        if self._deadline is not None:
            self._deadline.arm()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + len(b": \r\n"))
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._deadline is not None:
            self._deadline.disarm()
        super().on_headers_complete()

    def _count(self, size: int) -> None:
        self._head_parsed += size
        if self._head_parsed > self.max_head_bytes:
            self._refused()
            raise _HeadTooLarge(HEAD_TOO_LARGE)

    def _refused(self) -> None:
        self._report("headers_too_large", peer_of(self.transport))
