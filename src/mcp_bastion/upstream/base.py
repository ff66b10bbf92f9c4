"""The seam between the gate and an upstream MCP server.

An ``Upstream`` is one configured server. A ``Channel`` is one upstream MCP session opened *for one
principal*: a handshake-era session (``open_session``, one per gateway session) or the principal's
stateless channel for the modern era (``stateless``). Channels are never shared between principals:
that is what keeps the gateway from becoming a confused deputy with one upstream identity for all users.

A ``Reply`` is what the upstream answered to one message: a single JSON message, an SSE stream of
messages (progress, server requests, then the response), or "accepted" for notifications and responses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from mcp_bastion.exchange import Principal
from mcp_bastion.jsonrpc.message import Message

FORWARDED_HEADERS = ("mcp-protocol-version", "mcp-method", "mcp-name", "last-event-id")
"""Request headers carried to the upstream (plus every ``mcp-param-*``). Never Authorization or cookies."""


@dataclass(frozen=True, slots=True)
class Event:
    """One message from the upstream, with its SSE framing facts when it came on a stream."""

    data: bytes
    """The message as the upstream sent it (forwarded unchanged unless a stage rewrites it)."""
    message: Message | None
    """Parsed message; None for an SSE event without data (a priming event carrying only id/retry)."""
    event_id: str | None = None
    retry_ms: int | None = None


@dataclass(slots=True)
class Reply:
    """The upstream's answer to one forwarded message."""

    kind: Literal["json", "sse", "accepted"]
    events: AsyncIterator[Event]
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    """Response headers worth knowing (e.g. the upstream ``mcp-session-id``); lower-cased names."""

    async def aclose(self) -> None:
        close = getattr(self.events, "aclose", None)
        if close is not None:
            await close()


async def no_events() -> AsyncIterator[Event]:
    """An empty event stream (for accepted notifications)."""
    return
    yield  # pragma: no cover - makes this an async generator


async def one_event(event: Event) -> AsyncIterator[Event]:
    yield event


class Channel(Protocol):
    """One upstream MCP session belonging to one principal."""

    async def send(self, message: Message, data: bytes, headers: Mapping[str, str]) -> Reply:
        """Forward one message; raise ``UpstreamError``/``UpstreamTimeout`` when the upstream fails."""
        ...

    async def listen(self, headers: Mapping[str, str]) -> Reply:
        """Open the server-to-client stream (the HTTP GET stream); raise ``MethodNotAllowed`` if none."""
        ...

    async def aclose(self) -> None:
        """End the upstream session (DELETE it, or stop the child) and release its resources."""
        ...


class Upstream(Protocol):
    """One configured MCP server."""

    name: str

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def open_session(self, principal: Principal) -> Channel:
        """A fresh handshake-era session for ``principal`` (its ``initialize`` is the first message sent)."""
        ...

    async def stateless(self, principal: Principal) -> Channel:
        """The modern-era (2026-07-28, no session) channel for ``principal``."""
        ...
