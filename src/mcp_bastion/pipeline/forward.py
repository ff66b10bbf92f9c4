"""Stage ``forward`` (the last request stage): send the message to the upstream channel.

Forwarding is transport-level: the bytes the client sent are forwarded as they are (a batch item is
serialised once), with only the MCP protocol headers. The client's ``Authorization`` header, cookies and
its ``Mcp-Session-Id`` are never forwarded: the upstream sees the gateway's session for this principal,
never the client's token (no token passthrough).
"""

from __future__ import annotations

from typing import ClassVar

import orjson

from mcp_bastion.exchange import Exchange
from mcp_bastion.sessions import SessionStore
from mcp_bastion.upstream.base import FORWARDED_HEADERS, Reply, no_events


class Forward:
    name: ClassVar[str] = "forward"

    def __init__(self, store: SessionStore) -> None:
        self.store = store

    async def __call__(self, exchange: Exchange) -> None:
        headers = {
            k: v for k, v in exchange.http.headers.items() if k in FORWARDED_HEADERS or k.startswith("mcp-param-")
        }
        method = exchange.http.method
        if method == "GET":
            exchange.reply = await exchange.channel.listen(headers)
            return
        if method == "DELETE":
            session = exchange.session
            assert session is not None  # the session stage requires one for DELETE
            self.store.pop(session.id)
            await exchange.channel.aclose()
            exchange.reply = Reply("accepted", no_events(), status=200)
            return
        message = exchange.message
        data = exchange.body.data if exchange.batch_index is None else orjson.dumps(message.raw)
        exchange.reply = await exchange.channel.send(message, data, headers)
