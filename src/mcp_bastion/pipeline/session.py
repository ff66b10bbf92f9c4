"""Stage ``session``: which upstream channel carries this message, and is the caller entitled to it?

- ``initialize`` (handshake era) opens a new gateway session bound to the principal, with its own fresh
  upstream session: the gateway issues the ``Mcp-Session-Id``; the upstream's id never reaches the client.
- Any other handshake-era message must carry a session id that belongs to the same principal and endpoint
  (``SessionStore.get`` refuses foreign ids exactly like unknown ones).
- A 2026-07-28 message (per-request ``_meta`` envelope, ``MCP-Protocol-Version`` header, no session id)
  goes on the principal's stateless channel.
- GET (server stream) and DELETE (end session) need a session.
"""

from __future__ import annotations

from typing import ClassVar

from mcp_bastion.errors import MalformedRequest
from mcp_bastion.exchange import Exchange
from mcp_bastion.jsonrpc.methods import MODERN_VERSIONS
from mcp_bastion.sessions import SessionStore

PROTOCOL_VERSION_META = "io.modelcontextprotocol/protocolVersion"


class Sessions:
    name: ClassVar[str] = "session"

    def __init__(self, store: SessionStore) -> None:
        self.store = store

    async def __call__(self, exchange: Exchange) -> None:
        headers = exchange.http.headers
        session_id = headers.get("mcp-session-id")
        message = exchange.maybe_message
        principal = exchange.principal
        if session_id is not None:
            if message is not None and message.method == "initialize":
                raise MalformedRequest("initialize inside an existing session", reason="initialize_in_session")
            session = self.store.get(session_id, principal, exchange.endpoint)
            exchange.era, exchange.session, exchange.channel = "handshake", session, session.channel
            return
        if message is None:
            raise MalformedRequest(f"{exchange.http.method} needs Mcp-Session-Id", reason="session_required")
        if message.method == "initialize":
            if exchange.batch_index is not None:
                raise MalformedRequest("initialize must not be part of a batch", reason="initialize_in_batch")
            channel = await exchange.upstream.open_session(principal)
            exchange.era, exchange.channel = "handshake", channel
            exchange.session = self.store.create(principal, exchange.endpoint, channel)
            return
        if _is_modern(exchange):
            exchange.era, exchange.session = "modern", None
            exchange.channel = await exchange.upstream.stateless(principal)
            return
        raise MalformedRequest("Mcp-Session-Id header is required", reason="session_required")


def _is_modern(exchange: Exchange) -> bool:
    if exchange.http.headers.get("mcp-protocol-version") in MODERN_VERSIONS:
        return True
    meta = exchange.message.params.get("_meta")
    return isinstance(meta, dict) and meta.get(PROTOCOL_VERSION_META) in MODERN_VERSIONS
