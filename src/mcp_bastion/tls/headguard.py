"""Limits on the request head that uvicorn 0.54 does not enforce: how long it may take, how big it may be.

- **Header timeout** (slowloris): uvicorn times out idle keep-alive connections only *after* a
  response. A client that connects and trickles header bytes, one a second, holds a connection (and a
  slot of ``limit_concurrency``) forever. ``HeadDeadline`` aborts the connection unless the head is
  complete ``header_timeout`` seconds after the connection opened, or after the first byte of a
  later request on it. The TLS handshake itself is bounded separately by asyncio's 60 s
  ``ssl_handshake_timeout``.
- **Head size**: h11 bounds only an *incomplete* head (a complete 64 KB head that arrives in one read
  passes) and httptools bounds nothing, so both protocol subclasses add an exact check.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ClassVar, Final, Self

DEFAULT_HEADER_TIMEOUT: Final = 10.0
"""Seconds a client has to deliver a complete request head (``limits.header_timeout``)."""
DEFAULT_MAX_HEAD_BYTES: Final = 16_384
"""Largest request head, request line and header fields together (``limits.max_header_bytes``)."""

HEAD_TOO_LARGE: Final = "Request header fields too large."
"""Why an oversized head was refused (the 400 body, or the parser error uvicorn logs)."""


Refusal = Callable[[str, str], None]
"""Told ``(reason, peer address)`` when a connection is refused before the app sees a request, so the
refusal is audited like every other: ``header_timeout`` or ``headers_too_large``."""


def peer_of(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else ""


class HeadDeadline:
    """Aborts a transport unless ``disarm`` is called within ``seconds`` of ``arm``."""

    __slots__ = ("_handle", "_loop", "_on_expire", "_seconds", "_transport")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        transport: asyncio.Transport,
        seconds: float | None,
        on_expire: Refusal | None = None,
    ) -> None:
        self._loop, self._transport, self._seconds = loop, transport, seconds
        self._on_expire = on_expire
        self._handle: asyncio.TimerHandle | None = None

    def arm(self) -> None:
        """Start the clock unless it is running: the deadline counts from the head's first byte."""
        if self._handle is None and self._seconds is not None and not self._transport.is_closing():
            self._handle = self._loop.call_later(self._seconds, self._expire)

    def disarm(self) -> None:
        """Stop the clock: the head is complete, or the connection is gone."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _expire(self) -> None:
        self._handle = None
        # abort, not close: close would wait (asyncio's TLS shutdown timeout is 30 s) for a peer that is
        # slow on purpose, and there is nothing of ours to flush.
        if not self._transport.is_closing():
            if self._on_expire is not None:
                self._on_expire("header_timeout", peer_of(self._transport))
            self._transport.abort()


class HeadGuard:
    """Mixin for the uvicorn protocol subclasses: the limits (class attributes, since uvicorn instantiates
    the class itself), the head deadline of each connection, and refusal reports for the audit log."""

    header_timeout: ClassVar[float | None] = DEFAULT_HEADER_TIMEOUT
    """Seconds until a connection whose request head is incomplete is aborted; ``None`` disables."""
    max_head_bytes: ClassVar[int] = DEFAULT_MAX_HEAD_BYTES
    """Largest request head accepted."""
    refusal_hooks: ClassVar[tuple[Refusal, ...]] = ()
    """Told about connections refused before the app is called."""

    _deadline: HeadDeadline | None = None

    @classmethod
    def configured(
        cls, *, header_timeout: float | None, max_head_bytes: int, on_refusal: Refusal | None = None
    ) -> type[Self]:
        """A subclass carrying these limits."""
        hooks = (on_refusal,) if on_refusal else ()
        attributes = {"header_timeout": header_timeout, "max_head_bytes": max_head_bytes, "refusal_hooks": hooks}
        return type(cls.__name__, (cls,), attributes)

    def _start_deadline(self, loop: asyncio.AbstractEventLoop, transport: asyncio.Transport) -> None:
        # Arming at connection time also catches a client that connects and never sends a byte.
        self._deadline = HeadDeadline(loop, transport, self.header_timeout, self._report)
        self._deadline.arm()

    def _report(self, reason: str, peer: str) -> None:
        for hook in self.refusal_hooks:
            hook(reason, peer)
