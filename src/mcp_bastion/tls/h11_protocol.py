"""uvicorn's h11 protocol with ``scope["extensions"]["tls"]``, a header timeout and an exact head limit.

The pure-Python fallback for when httptools is not installed (see ``httptools_protocol``).

Pin note: relies on uvicorn 0.54 internals — ``self.app`` (the app each request cycle runs),
``self.conn`` (the h11 connection, replaced here), ``self.loop``, and uvicorn answering
``h11.RemoteProtocolError`` from ``next_event`` with a 400 and a close. ``tests/tls`` covers each.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from mcp_bastion.tls.headguard import (
    HEAD_TOO_LARGE,
    HeadGuard,
    peer_of,
)
from mcp_bastion.tls.peercert import read_tls_info, with_tls


class _BoundedHeadConnection(h11.Connection):
    """An h11 server connection that also refuses a *complete* request head over ``max_head_bytes``."""

    def __init__(self, max_head_bytes: int) -> None:
        # h11 itself refuses an incomplete head once its buffer holds more than this.
        super().__init__(h11.SERVER, max_incomplete_event_size=max_head_bytes)
        self._max_head_bytes = max_head_bytes
        self.refused = False
        """Set when a complete head over the limit was refused (the protocol reports it for the audit)."""

    def next_event(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        event = super().next_event()
        if isinstance(event, h11.Request):
            # Counted from the parsed head: exact, except optional whitespace h11 has already stripped.
            size = len(event.method) + len(event.target) + len(b"  HTTP/1.1\r\n\r\n")
            size += sum(len(name) + len(value) + len(b": \r\n") for name, value in event.headers)
            if size > self._max_head_bytes:
                self.refused = True
                # Raised before uvicorn sees the Request, so the app is never called.
                raise h11.RemoteProtocolError(HEAD_TOO_LARGE, error_status_hint=431)
        return event


class TLSH11Protocol(HeadGuard, H11Protocol):
    """uvicorn's ``H11Protocol`` plus TLS facts in the scope, a header timeout and a head-size limit."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._bounded = _BoundedHeadConnection(self.max_head_bytes)
        self.conn = self._bounded
        self._reported = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_deadline(self.loop, transport)
        info = read_tls_info(transport)
        if info is not None:
            self.app = with_tls(self.app, info)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._bounded.refused and not self._reported:
            self._reported = True
            self._report("headers_too_large", peer_of(self.transport))
        if self._deadline is None:
            return
        # Still IDLE after new bytes arrived: part of a request head is buffered, the rest is missing.
        if self.conn.their_state is h11.IDLE:
            self._deadline.arm()
        else:
            self._deadline.disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.disarm()
        super().connection_lost(exc)
