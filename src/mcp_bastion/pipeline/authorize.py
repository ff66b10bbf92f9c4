"""Stage ``authorize``: may this principal send this message to this server?

Today: the method allow-list (MCP's client methods, plus per-upstream ``allow_methods`` minus
``deny_methods``); unknown methods are denied, because no policy was ever written for them. A JSON-RPC
response from the client (answering a server's sampling/elicitation request) is only accepted inside a
session. Per-user, per-tool policy (Cedar) plugs in here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from mcp_bastion.errors import MalformedRequest, MethodDenied
from mcp_bastion.exchange import Exchange


class Authorize:
    name: ClassVar[str] = "authorize"

    def __init__(self, *, allowed_methods: Mapping[str, frozenset[str]]) -> None:
        self.allowed_methods = allowed_methods
        """Endpoint name -> the methods clients may send to it."""

    async def __call__(self, exchange: Exchange) -> None:
        message = exchange.maybe_message
        if message is None:  # GET / DELETE: the session stage already bound them to the caller
            return
        assert message is exchange.message
        if message.kind == "response":
            if exchange.session is None:
                raise MalformedRequest("a response needs a session", reason="response_without_session")
            return
        method = message.method or ""
        if method not in self.allowed_methods[exchange.endpoint]:
            raise MethodDenied(f"method {method[:100]!r} is not allowed on {exchange.endpoint}")
