"""Response stage ``reply``: every upstream event must make sense for the exchange it arrives on.

- on a POST, a response must answer the forwarded request's id (cross-talk would hand one request's
  result to another: fail closed with ``UpstreamError``);
- a server-to-client request must be one MCP defines (sampling, elicitation, roots, ping, tasks); others
  are refused rather than relayed to a client that never negotiated them;
- the answer to ``initialize`` completes the gateway session: an error answer ends it again.
"""

from __future__ import annotations

from typing import ClassVar

from mcp_bastion.errors import UpstreamError
from mcp_bastion.exchange import Exchange
from mcp_bastion.jsonrpc.methods import SERVER_REQUESTS
from mcp_bastion.sessions import SessionStore
from mcp_bastion.upstream.base import Event


class CheckReply:
    name: ClassVar[str] = "reply"

    def __init__(self, store: SessionStore) -> None:
        self.store = store

    async def __call__(self, exchange: Exchange, event: Event) -> Event:
        message = event.message
        if message is None:
            return event
        sent = exchange.maybe_message
        if message.kind == "response":
            if sent is None or sent.kind != "request" or sent.id != message.id:
                raise UpstreamError(f"upstream answered id {message.id!r} unasked", reason="upstream_wrong_id")
            if sent.method == "initialize":
                self._initialized(exchange, ok=not message.is_error)
        elif message.kind == "request" and message.method not in SERVER_REQUESTS:
            raise UpstreamError(f"upstream sent unknown request {message.method!r}", reason="upstream_bad_request")
        return event

    def _initialized(self, exchange: Exchange, *, ok: bool) -> None:
        session = exchange.session
        if session is not None and not ok:
            self.store.pop(session.id)
            exchange.session = None
