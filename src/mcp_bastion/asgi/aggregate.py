"""The aggregate endpoint ``/mcp``: several upstreams served as one MCP server, with namespaced names.

Design. ``/mcp`` is served by the ordinary ``MCPEndpoint`` (HTTP framing, JSON or SSE) over a second
``Gate``: the same admission stages (transport, authenticate, parse), the same ``session`` stage, and
``Dispatch`` (this module) as its last request stage instead of ``forward``. ``Dispatch`` answers what
belongs to the aggregate itself and sends everything else as *sub-exchanges* through the main gate, one
per real upstream (``upstream.aggregate.Members``), so authentication facts, the Cedar policy **of the real
server**, pins and quarantine, argument validation, list filtering and audit apply unchanged: ``/mcp``
can never show or do more than ``/mcp/<server>`` for the same caller. Each message to ``/mcp`` has its own
audit record (server ``*``) and each sub-request its own (request id ``<id>/<server>``).

- Tokens: ``/mcp`` is its own RFC 8707 resource (``<base>/mcp``, RFC 9728 metadata at
  ``/.well-known/oauth-protected-resource/mcp``, scopes: the members' together). A token for
  ``/mcp/<server>`` is refused at ``/mcp`` and the other way round.
- ``initialize`` (handshake era) is answered here: a gateway session of its own, with one member session
  per upstream opened through the gate; capabilities are the members' together (``tools``, ``prompts``,
  ``resources``, ``completions``), without ``listChanged``/``subscribe``: notifications are not relayed.
  ``server/discover`` (2026-07-28) likewise asks every member and merges. ``ping`` is answered here.
  Members' ``instructions`` are not passed on: unvetted model-facing text that no pin covers.
- Names: tools and prompts are ``<server>.<name>``. Upstream names match ``[a-z0-9][a-z0-9_-]*`` (settings),
  so they never contain ``.``: the first ``.`` splits a name unambiguously, whatever the tool name holds.
  ``tools/call`` and ``prompts/get`` go to that server with the original name (and ``Mcp-Name``) restored;
  the answer is the member's, relayed as it comes (progress included). An unknown or missing prefix is
  invalid params (``server_unknown``).
- Resources keep their URIs: they are identifiers that tool results (``resource_link``) and clients refer
  to, and rewriting them would break those references. ``resources/read`` and ``completion/complete`` of a
  resource are routed by what the lists taught (``ResourceRoutes``): a URI listed by exactly one member, else
  the member whose template's literal prefix (which must include a scheme) matches it. A URI two members
  claim is *ambiguous*: left out of the merged list and refused (``resource_ambiguous``), never guessed;
  an unknown one makes the aggregate read the lists once for this caller before refusing it.
- Lists: each member's list is read completely (following its cursors, ``MAX_LIST_PAGES`` pages and
  ``MAX_ITEMS_PER_SERVER`` items at most) and the merge is answered in **one page**, without
  ``nextCursor``. A merged cursor would have to encode every member's position in an opaque, tamper-proof
  token; the bounds make one page safe, and clients read a one-page list like any other. A request
  carrying a cursor is invalid params (``cursor_invalid``): we never issued one. A member whose list is
  refused (policy) or fails contributes nothing; its sub-request's audit record says why.
- Shadowing (``integrity.shadowing``, ``integrity.shadowguard``): the merged tool list is reviewed as a
  whole; a tool imitating another server's tool, or whose description names one, is quarantined (in the
  pin store when there is one: then hidden and refused on ``/mcp/<server>`` too), left out of the list and
  refused when called (``tool_shadowing``). A call of a tool no review has seen yet triggers one first.
  A tool this caller's lists do not show (its policy hides it, or it does not exist) is still left to its
  server's gate, exactly as on ``/mcp/<server>``: policy may permit a call only with certain arguments.
- Not supported (refused as unknown methods, never advertised): the GET stream (405, as MCP allows: no
  ``list_changed``), resource subscriptions, ``logging/setLevel``, tasks, and server-to-client requests
  (members are offered no client capabilities; stray ones are dropped). Client notifications are accepted
  and not forwarded (a cancel is a closed connection, which the edge turns into cancelling the member's
  request).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import ClassVar, Final, TypeVar

import orjson

from mcp_bastion.asgi.mcp import MCPEndpoint
from mcp_bastion.asgi.namespace import ResourceRoutes, merge_capabilities, qualify, split
from mcp_bastion.audit.sink import AuditSink
from mcp_bastion.errors import (
    BastionError,
    InvalidArguments,
    MalformedRequest,
    MethodDenied,
    MethodNotAllowed,
    UpstreamError,
)
from mcp_bastion.exchange import Exchange
from mcp_bastion.integrity.pins import PinStore
from mcp_bastion.integrity.shadowguard import ShadowGuard
from mcp_bastion.jsonrpc.message import JSONObject, JSONValue, Message
from mcp_bastion.jsonrpc.methods import HANDSHAKE_VERSIONS, MODERN_VERSIONS
from mcp_bastion.pipeline.session import Sessions
from mcp_bastion.pipeline.stage import Gate
from mcp_bastion.sessions import SessionStore
from mcp_bastion.upstream.aggregate import AGGREGATE, Aggregate, Fanout, Members, envelope, plain
from mcp_bastion.upstream.base import Event, Reply, Upstream, no_events, one_event

log = logging.getLogger(__name__)

LISTS: Final[Mapping[str, tuple[str, str]]] = {
    "tools/list": ("tools", "name"),
    "prompts/list": ("prompts", "name"),
    "resources/list": ("resources", "uri"),
    "resources/templates/list": ("resourceTemplates", "uriTemplate"),
}
"""List method -> (result member, item member naming it)."""
SERVER_INFO: Final[JSONObject] = {"name": "mcp-bastion-aggregate", "version": "1"}

Handler = Callable[[Exchange], Awaitable[Reply]]
_T = TypeVar("_T")


class Dispatch:
    """The aggregate gate's last request stage: answer, or route through the main gate (module docstring)."""

    name: ClassVar[str] = "aggregate"

    def __init__(self, members: Members, guard: ShadowGuard) -> None:
        self.members = members
        self.guard = guard
        self.routes = ResourceRoutes()
        self.handlers: Mapping[str, Handler] = {
            "initialize": self._initialize,
            "server/discover": self._discover,
            "ping": self._ping,
            **{method: self._list for method in LISTS},
            "tools/call": self._call_tool,
            "prompts/get": self._get_prompt,
            "resources/read": self._read_resource,
            "completion/complete": self._complete,
        }

    async def __call__(self, exchange: Exchange) -> None:
        method = exchange.http.method
        if method == "GET":
            raise MethodNotAllowed("the aggregate endpoint has no server stream", reason="aggregate_no_stream")
        if method == "DELETE":
            session, fanout = exchange.session, exchange.channel
            assert session is not None  # the session stage requires one for DELETE
            assert isinstance(fanout, Fanout)
            fanout.store.pop(session.id)
            await fanout.aclose()
            exchange.reply = Reply("accepted", no_events(), status=200)
            return
        message = exchange.message
        if message.kind == "response":
            raise MalformedRequest("the aggregate endpoint sent no request to answer", reason="response_unexpected")
        if message.kind == "notification":
            exchange.reply = Reply("accepted", no_events(), status=202)
            return
        handler = self.handlers.get(message.method or "")
        if handler is None:
            raise MethodDenied(f"method {str(message.method)[:100]!r} is not served by the aggregate endpoint")
        exchange.reply = await handler(exchange)

    # -- answered here ------------------------------------------------------------------------------

    async def _initialize(self, exchange: Exchange) -> Reply:
        fanout = exchange.channel
        assert isinstance(fanout, Fanout)  # the session stage opened it for this initialize
        params = exchange.message.params
        requested = params.get("protocolVersion")
        client: JSONObject = {}
        if isinstance(requested, str):
            client["protocolVersion"] = requested
        if isinstance(params.get("clientInfo"), dict):
            client["clientInfo"] = params["clientInfo"]
        fanout.client = client
        opened = await self._each(exchange, lambda server: self.members.session(exchange, server))
        capabilities = [member.capabilities for member in opened.values() if member is not None]
        if not capabilities:
            raise UpstreamError("no member server could be initialized", reason="aggregate_unavailable")
        known = isinstance(requested, str) and requested in HANDSHAKE_VERSIONS
        version = requested if known else HANDSHAKE_VERSIONS[-1]
        result: JSONObject = {
            "protocolVersion": version,
            "capabilities": merge_capabilities(capabilities),
            "serverInfo": dict(SERVER_INFO),
        }
        return answer(exchange, result)

    async def _discover(self, exchange: Exchange) -> Reply:
        raw: JSONObject = {"jsonrpc": "2.0", "id": exchange.message.id, "method": "server/discover"}
        raw["params"] = envelope(exchange)
        answers = await self._each(exchange, lambda server: self.members.ask(exchange, server, raw))
        results = [plain(message.raw.get("result")) for message in answers.values()]
        results = [result for result in results if result]
        if not results:
            raise UpstreamError("no member server answered server/discover", reason="aggregate_unavailable")
        versions = [v for v in MODERN_VERSIONS if all(v in _strings(r.get("supportedVersions")) for r in results)]
        result: JSONObject = {
            "supportedVersions": list(versions or MODERN_VERSIONS),
            "capabilities": merge_capabilities(plain(r.get("capabilities")) for r in results),
            **CACHE_PRIVATE,
        }
        return answer(exchange, result)

    async def _ping(self, exchange: Exchange) -> Reply:
        return answer(exchange, {})

    async def _list(self, exchange: Exchange) -> Reply:
        method = exchange.message.method or ""
        key, member = LISTS[method]
        if "cursor" in exchange.message.params:
            raise InvalidArguments("the aggregate endpoint answers lists in one page", reason="cursor_invalid")
        lists = await self._lists(exchange, method)
        pairs = [(server, item) for server, items in lists.items() for item in items]
        merged: list[JSONValue]
        if method == "tools/list":
            held = await self.guard.review(pairs)
            merged = [_qualified(s, item) for s, item in pairs if _name(item, member) and (s, item["name"]) not in held]
        elif method == "prompts/list":
            merged = [_qualified(s, item) for s, item in pairs if _name(item, member)]
        else:
            for server, items in lists.items():
                names = [name for item in items if (name := _name(item, member))]
                if method == "resources/list":
                    self.routes.learn(server, uris=names)
                else:
                    self.routes.learn(server, templates=names)
            merged = [item for item in _unambiguous(pairs, member, method)]
        result: JSONObject = {key: merged}
        if exchange.era == "modern":
            result.update(CACHE_PRIVATE)
        return answer(exchange, result)

    # -- routed to one member -----------------------------------------------------------------------

    async def _call_tool(self, exchange: Exchange) -> Reply:
        params = exchange.message.params
        server, name = split(params.get("name"), self.members.servers)
        if not self.guard.reviewed(server, name):
            # Never reviewed (called without listing, or new since): look at every member's tools first.
            lists = await self._lists(exchange, "tools/list")
            await self.guard.review([(s, item) for s, items in lists.items() for item in items])
        self.guard.refuse(server, name)
        raw = {**exchange.message.raw, "params": {**params, "name": name}}
        return await self.members.stream(exchange, server, raw, name=name)

    async def _get_prompt(self, exchange: Exchange) -> Reply:
        params = exchange.message.params
        server, name = split(params.get("name"), self.members.servers)
        raw = {**exchange.message.raw, "params": {**params, "name": name}}
        return await self.members.stream(exchange, server, raw, name=name)

    async def _read_resource(self, exchange: Exchange) -> Reply:
        uri = exchange.message.params.get("uri")
        if not isinstance(uri, str) or not uri:
            raise MalformedRequest("resources/read needs a string uri", reason="resource_uri_missing")
        server = await self._route(exchange, uri)
        return await self.members.stream(exchange, server, exchange.message.raw, name=uri)

    async def _complete(self, exchange: Exchange) -> Reply:
        params = exchange.message.params
        ref = plain(params.get("ref"))
        if ref.get("type") == "ref/prompt":
            server, name = split(ref.get("name"), self.members.servers)
            raw = {**exchange.message.raw, "params": {**params, "ref": {**ref, "name": name}}}
            return await self.members.stream(exchange, server, raw, name=None)
        uri = ref.get("uri")
        if ref.get("type") == "ref/resource" and isinstance(uri, str) and uri:
            server = await self._route(exchange, uri)
            return await self.members.stream(exchange, server, exchange.message.raw, name=None)
        raise MalformedRequest("completion/complete needs a prompt or resource ref", reason="completion_ref_invalid")

    async def _route(self, exchange: Exchange, uri: str) -> str:
        claimants = self.routes.claimants(uri)
        if not claimants:
            for method in ("resources/list", "resources/templates/list"):
                member = LISTS[method][1]
                for server, items in (await self._lists(exchange, method)).items():
                    names = [name for item in items if (name := _name(item, member))]
                    if method == "resources/list":
                        self.routes.learn(server, uris=names)
                    else:
                        self.routes.learn(server, templates=names)
            claimants = self.routes.claimants(uri)
        if not claimants:
            raise InvalidArguments(f"no server of the aggregate serves {uri[:100]!r}", reason="resource_unknown")
        if len(claimants) > 1:
            raise InvalidArguments(f"{uri[:100]!r} is claimed by {sorted(claimants)}", reason="resource_ambiguous")
        return claimants.pop()

    # -- fan-out ------------------------------------------------------------------------------------

    async def _lists(self, exchange: Exchange, method: str) -> dict[str, list[JSONObject]]:
        key = LISTS[method][0]
        return await self._each(exchange, lambda server: self.members.list_all(exchange, server, method, key))

    async def _each(self, exchange: Exchange, work: Callable[[str], Awaitable[_T]]) -> dict[str, _T]:
        """``work`` for every member at once, in member order; a member that refuses or fails is left out
        (its sub-request's audit record says why). Anything but a ``BastionError`` fails the whole."""

        async def one(server: str) -> tuple[str, _T] | None:
            try:
                return server, await work(server)
            except BastionError as exc:
                log.info("aggregate %s: %s left out: %s (%s)", exchange.request_id, server, exc.reason, exc.detail)
                return None

        done = await asyncio.gather(*(one(server) for server in self.members.servers))
        return dict(pair for pair in done if pair is not None)


CACHE_PRIVATE: Final[JSONObject] = {"resultType": "complete", "ttlMs": 0, "cacheScope": "private"}
"""2026-07-28 cache directives of a merged answer: per caller (filtered by their policy), never shared."""


def answer(exchange: Exchange, result: JSONObject) -> Reply:
    raw: JSONObject = {"jsonrpc": "2.0", "id": exchange.message.id, "result": result}
    message = Message("response", raw, exchange.message.id, None)
    return Reply("json", one_event(Event(orjson.dumps(raw), message)))


def _name(item: JSONObject, member: str) -> str | None:
    value = item.get(member)
    return value if isinstance(value, str) and value else None


def _qualified(server: str, item: JSONObject) -> JSONObject:
    return {**item, "name": qualify(server, str(item["name"]))}


def _unambiguous(pairs: list[tuple[str, JSONObject]], member: str, method: str) -> Iterable[JSONObject]:
    """Resources (templates) keep their URIs; one that two members list is left out, logged."""
    owners: dict[str, set[str]] = {}
    for server, item in pairs:
        name = _name(item, member)
        if name is not None:
            owners.setdefault(name, set()).add(server)
    for _, item in pairs:
        name = _name(item, member)
        if name is None:
            continue
        if len(owners[name]) > 1:
            log.warning("%s %r is listed by %s: left out of the aggregate", method, name[:100], sorted(owners[name]))
            continue
        yield item


def _strings(value: JSONValue) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def aggregate_endpoint(
    *,
    servers: Sequence[str],
    gate: Gate,
    upstreams: Mapping[str, Upstream],
    sessions: SessionStore,
    pins: PinStore | None,
    audit: AuditSink,
    metadata_url: str,
    max_body_bytes: int,
    body_timeout: float,
) -> MCPEndpoint:
    """``/mcp``: an ``MCPEndpoint`` over a gate of its own (the main gate's admission stages, the session
    stage, ``Dispatch``) whose sub-requests run through ``gate``. Its exchanges are named ``AGGREGATE``:
    the authenticate stage must know that endpoint's resource URL."""
    members = Members(gate, {name: upstreams[name] for name in servers}, servers)
    front = Gate(
        admission=gate.admission,
        request=[Sessions(sessions), Dispatch(members, ShadowGuard(pins))],
        response=[],
        audit=audit,
    )
    return MCPEndpoint(
        gate=front,
        upstreams={AGGREGATE: Aggregate(sessions)},
        sessions=sessions,
        metadata_urls={AGGREGATE: metadata_url},
        max_body_bytes=max_body_bytes,
        body_timeout=body_timeout,
    )
