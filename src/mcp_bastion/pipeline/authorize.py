"""Stage ``authorize``: may this principal send this message to this server?

First the method allow-list (MCP's client methods, plus per-upstream ``allow_methods`` minus
``deny_methods``): unknown methods are denied, because no policy was ever written for them. Then the
policy (``policy.authorizer``): tool calls, resource reads, prompts, completions and the list methods
need a permitting Cedar policy and the scopes the item needs. A JSON-RPC response from the client
(answering a server's sampling/elicitation request) is only accepted inside a session.

A ``tools/call`` of a tool the gateway has not seen listed makes the stage list the upstream's tools
itself, once, on the caller's own channel (a client may call a tool it remembers from an earlier
connection); a tool still unknown after that is refused as MCP says: invalid params.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Mapping
from typing import ClassVar, Final

import orjson

from mcp_bastion.errors import InvalidArguments, MalformedRequest, MethodDenied, ToolQuarantined, UpstreamError
from mcp_bastion.exchange import Exchange
from mcp_bastion.integrity.arguments import MAX_ARGUMENT_BYTES, MAX_ARGUMENT_DEPTH, ArgumentChecker, check_size
from mcp_bastion.integrity.pins import Kind, PinStore
from mcp_bastion.integrity.sinks import SinkChecker
from mcp_bastion.jsonrpc.message import JSONValue, classify
from mcp_bastion.policy.authorizer import Authorizer, UnknownTool
from mcp_bastion.policy.entities import Caller

MAX_LIST_PAGES: Final = 20
"""Pages of ``tools/list`` read when looking for an unknown tool (a bound on what a server can make us do)."""


class Authorize:
    name: ClassVar[str] = "authorize"

    def __init__(
        self,
        *,
        allowed_methods: Mapping[str, frozenset[str]],
        authorizer: Authorizer,
        pins: PinStore | None = None,
        max_argument_bytes: int = MAX_ARGUMENT_BYTES,
        max_argument_depth: int = MAX_ARGUMENT_DEPTH,
        sinks: SinkChecker | None = None,
    ) -> None:
        self.allowed_methods = allowed_methods
        """Endpoint name -> the methods clients may send to it."""
        self.authorizer = authorizer
        self.pins = pins
        self.max_argument_bytes = max_argument_bytes
        self.max_argument_depth = max_argument_depth
        self.arguments = ArgumentChecker()
        """Every call against its tool's pinned ``inputSchema`` (only where tools are pinned)."""
        self.sinks = sinks
        """Then arguments bound for a path, shell, SQL or URL sink (configured, or inferred from the pin)."""

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
        if message.kind != "request":
            return
        engine = self.authorizer.engine
        exchange.policy_version = engine.version
        caller = caller_of(exchange)
        try:
            exchange.decision = self.authorizer.check_call(caller, exchange.endpoint, message, engine)
        except UnknownTool as unknown:
            await list_tools(exchange, self.authorizer, self.pins)
            try:
                exchange.decision = self.authorizer.check_call(caller, exchange.endpoint, message, engine)
            except UnknownTool:
                # A tool the catalog does not know because it is quarantined (never learnt) says so.
                if self.pins is not None:
                    refuse_quarantined(self.pins, exchange.endpoint, method, message.params)
                raise InvalidArguments(f"unknown tool {str(unknown)[:100]!r}", reason="tool_unknown") from None
        pins = self.pins
        if pins is not None:
            refuse_quarantined(pins, exchange.endpoint, method, message.params)
        name = message.params.get("name")
        if method == "tools/call" and isinstance(name, str):
            await self._check_arguments(exchange.endpoint, name, message.params.get("arguments"))

    async def _check_arguments(self, server: str, name: str, raw: JSONValue) -> None:
        """Size and depth, then the pinned ``inputSchema``, then the sinks: each refusal is -32602."""
        arguments = raw if isinstance(raw, dict) else {}
        check_size(name, arguments, max_bytes=self.max_argument_bytes, max_depth=self.max_argument_depth)
        pin = self.pins.pinned(server, name) if self.pins is not None else None
        if pin is not None:
            schema = pin.definition.get("inputSchema", {"type": "object"})
            self.arguments.check(name, pin.digest, schema, arguments)
        if self.sinks is not None:
            definition, digest = (pin.definition, pin.digest) if pin is not None else (None, "")
            await self.sinks.check(server, name, raw, definition=definition, digest=digest)


QUARANTINABLE: Final[Mapping[str, tuple[Kind, str]]] = {
    "tools/call": ("tool", "name"),
    "prompts/get": ("prompt", "name"),
    "resources/read": ("resource", "uri"),
    "resources/subscribe": ("resource", "uri"),
}
"""Methods that use one pinned item: its kind and the params member naming it."""
_CAUSES: Final[Mapping[str, str]] = {"changed": "quarantined", "new": "unapproved"}


def refuse_quarantined(pins: PinStore, server: str, method: str, params: Mapping[str, JSONValue]) -> None:
    """Raise ``ToolQuarantined`` when the message uses a quarantined item (its reason names the cause)."""
    target = QUARANTINABLE.get(method)
    if target is None:
        return
    kind, member = target
    name = params.get(member)
    if isinstance(name, str) and pins.quarantined(server, name, kind):
        cause = pins.reason(server, name, kind) or "changed"
        raise ToolQuarantined(
            f"{server}: {kind} {name[:100]!r} is quarantined ({cause})", reason=f"{kind}_{_CAUSES.get(cause, cause)}"
        )


def caller_of(exchange: Exchange) -> Caller:
    return Caller(exchange.principal, ip_of(exchange.http.client_addr), exchange.http.scheme == "https")


def ip_of(client_addr: str) -> str:
    """The IP address in the edge's ``host:port`` / ``[v6]:port`` form; ``0.0.0.0`` when there is none (a
    Unix socket), which no address rule of a policy matches by accident."""
    for candidate in (client_addr.rpartition(":")[0].strip("[]"), client_addr):
        try:
            # A scoped IPv6 address (fe80::1%eth0) without its zone: Cedar's ip() has no zones.
            return str(ipaddress.ip_address(candidate.partition("%")[0]))
        except ValueError:
            continue
    return "0.0.0.0"  # noqa: S104 - a value for policies to compare, not an address to bind


async def list_tools(exchange: Exchange, authorizer: Authorizer, pins: PinStore | None = None) -> None:
    """Read the upstream's tool list on the exchange's channel and teach it to the catalog."""
    message = exchange.message
    params: dict[str, JSONValue] = {}
    meta = message.params.get("_meta")
    if exchange.era == "modern" and isinstance(meta, dict):
        # The stateless era needs the envelope on every request: the caller's own version and capabilities.
        params["_meta"] = {key: value for key, value in meta.items() if key.startswith("io.modelcontextprotocol/")}
    headers = {"mcp-method": "tools/list"}
    version = exchange.http.headers.get("mcp-protocol-version")
    if version is not None:
        headers["mcp-protocol-version"] = version
    for _ in range(MAX_LIST_PAGES):
        request_id = f"mcp-bastion-{secrets.token_hex(8)}"
        raw: dict[str, JSONValue] = {"jsonrpc": "2.0", "id": request_id, "method": "tools/list", "params": params}
        reply = await exchange.channel.send(classify(raw), orjson.dumps(raw), headers)
        result: JSONValue = None
        try:
            async for event in reply.events:
                answer = event.message
                if answer is not None and answer.kind == "response" and answer.id == request_id:
                    result = answer.raw.get("result")
                    break
        finally:
            await reply.aclose()
        if not isinstance(result, dict) or not isinstance(result.get("tools"), list):
            raise UpstreamError("the upstream did not answer tools/list", reason="upstream_tools_list_failed")
        tools = [tool for tool in result["tools"] if isinstance(tool, dict)]  # type: ignore[union-attr]
        held = await pins.observe(exchange.endpoint, tools) if pins is not None else set()
        for tool in tools:
            if tool.get("name") not in held:  # a changed tool is not learnt: it is refused below anyway
                authorizer.catalog.learn(exchange.endpoint, tool)
        cursor = result.get("nextCursor")
        if not isinstance(cursor, str) or not cursor:
            return
        params = {**params, "cursor": cursor}
