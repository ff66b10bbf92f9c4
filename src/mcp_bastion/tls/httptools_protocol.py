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
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from mcp_bastion.tls.headguard import (
    HEAD_TOO_LARGE,
    HeadGuard,
    peer_of,
)
from mcp_bastion.tls.peercert import read_tls_info, with_tls


class _HeadTooLarge(Exception):
    """Raised from a parser callback; httptools turns it into ``HttpParserCallbackError`` -> 400."""


class TLSHttpToolsProtocol(HeadGuard, HttpToolsProtocol):
    """uvicorn's ``HttpToolsProtocol`` plus TLS facts in the scope, a header timeout and a head limit."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._in_head = False
        self._head_parsed = 0
        """Bytes of the current head's target and complete header fields."""
        self._head_received = 0
        """Bytes read since the current head began, counted while it is incomplete (an upper bound)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_deadline(self.loop, transport)
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
