"""Stage ``parse``: read the body within its limits and parse it into JSON-RPC messages, exactly once.

Only POST carries messages; GET (the server stream) and DELETE (end session) have no body and are handled
by the edge after admission.
"""

from __future__ import annotations

from typing import ClassVar

from mcp_bastion.exchange import Exchange
from mcp_bastion.jsonrpc.message import parse_body


class Parse:
    name: ClassVar[str] = "parse"

    def __init__(self, *, max_json_depth: int) -> None:
        self.max_json_depth = max_json_depth

    async def __call__(self, exchange: Exchange) -> None:
        if exchange.http.method != "POST":
            return
        data = await exchange.http.read_body()
        exchange.body = parse_body(data, max_depth=self.max_json_depth)
