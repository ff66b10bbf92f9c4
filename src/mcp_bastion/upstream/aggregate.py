"""The aggregate endpoint's side towards the real upstreams: sub-requests through the gate.

The aggregate endpoint (``asgi.aggregate``) never talks to an upstream itself. Every message it sends to a
real server is a *sub-exchange*: an ``Exchange`` for that server's endpoint carrying the caller's principal
and HTTP facts (address, scheme, TLS; never the caller's ``Authorization`` header), run through the same
gate as a message to ``/mcp/<server>`` with ``Gate.run_admitted``: sessions, throttle, authorize (Cedar
policy of *that* server, pins and quarantine, argument checks), forward, check reply, list filtering, and
one audit record, request id ``<aggregate request id>/<server>``. Nothing about a server's protection
depends on which endpoint the caller used.

Sessions, handshake era: the aggregate session's channel is a ``Fanout``. It holds one ordinary gateway
session per member server, opened by an ``initialize`` sub-exchange with the caller's protocol version and
client info but **no client capabilities** (the aggregate relays no server-to-client requests: sampling,
elicitation and roots are not offered to members). Member sessions live in the same ``SessionStore``, bound
to the principal and the member's endpoint and counted in the principal's session limit; closing the
aggregate session closes them, and one that expired meanwhile is opened again on next use. Modern era
(2026-07-28): no sessions; each sub-request carries the caller's own ``_meta`` envelope and version header.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import orjson
from mcp.shared.inbound import encode_header_value

from mcp_bastion.errors import InternalError, MethodNotAllowed, SessionRejected, UpstreamError
from mcp_bastion.exchange import Exchange, Principal
from mcp_bastion.jsonrpc.message import Body, JSONObject, JSONValue, Message, classify
from mcp_bastion.pipeline.authorize import MAX_LIST_PAGES
from mcp_bastion.pipeline.stage import Gate, Outgoing, Refusal
from mcp_bastion.sessions import SessionStore
from mcp_bastion.upstream.base import Event, Reply, Upstream

log = logging.getLogger(__name__)

AGGREGATE: Final = "*"
"""The aggregate endpoint's name in exchanges and audit records (no upstream can have it: see settings)."""
MAX_ITEMS_PER_SERVER: Final = 4096
"""Items of one list kind taken from one member (the catalog's own bound); the rest is dropped, logged."""
_DROPPED_HEADERS: Final = frozenset(
    {
        "authorization",
        "cookie",
        "content-length",
        "mcp-session-id",
        "mcp-name",
        "mcp-method",
        "mcp-protocol-version",
        "last-event-id",
    }
)
Items = AsyncGenerator[tuple[Exchange, Outgoing]]


@dataclass(frozen=True, slots=True)
class MemberSession:
    id: str
    """The gateway session id of the member session (never sent to the caller)."""
    version: str | None
    """The protocol version the member negotiated."""
    capabilities: JSONObject


class Fanout:
    """The channel of an aggregate session: the member sessions opened for it.

    It forwards nothing itself (the aggregate dispatches every message as sub-exchanges), so ``send`` is a
    bug and ``listen`` is refused: the aggregate endpoint has no server stream (405, as MCP allows).
    """

    def __init__(self, store: SessionStore) -> None:
        self.store = store
        self.members: dict[str, MemberSession] = {}
        self.client: JSONObject = {}
        """The caller's ``initialize`` params replayed to members: protocolVersion and clientInfo only."""
        self.locks: dict[str, asyncio.Lock] = {}
        self.closed = False

    async def send(self, message: Message, data: bytes, headers: Mapping[str, str]) -> Reply:
        raise InternalError("the aggregate session's channel forwards nothing")

    async def listen(self, headers: Mapping[str, str]) -> Reply:
        raise MethodNotAllowed("the aggregate endpoint has no server stream")

    async def aclose(self) -> None:
        self.closed = True
        members, self.members = self.members, {}
        for member in members.values():
            session = self.store.pop(member.id)
            if session is not None:
                await session.channel.aclose()


class Aggregate:
    """The ``Upstream`` behind ``/mcp``: sessions are ``Fanout``s (the ``session`` stage opens them)."""

    name = AGGREGATE

    def __init__(self, store: SessionStore) -> None:
        self.store = store

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def open_session(self, principal: Principal) -> Fanout:
        return Fanout(self.store)

    async def stateless(self, principal: Principal) -> Fanout:
        return Fanout(self.store)


class Members:
    """Runs sub-exchanges to the member servers of the aggregate through the gate."""

    def __init__(self, gate: Gate, upstreams: Mapping[str, Upstream], servers: Sequence[str]) -> None:
        self.gate = gate
        self.upstreams = upstreams
        self.servers = tuple(servers)

    # -- one request --------------------------------------------------------------------------------

    async def ask(self, parent: Exchange, server: str, raw: JSONObject, *, name: str | None = None) -> Message:
        """Send one request to ``server``; its final response (an error answer included), or raise the
        refusal (the gate's, or ``UpstreamError`` when the member closed without answering)."""
        member = await self.session(parent, server)
        sub = self._sub(parent, server, raw, member, name=name)
        return await _final(self.gate.run_admitted(sub), server)

    async def stream(self, parent: Exchange, server: str, raw: JSONObject, *, name: str | None) -> Reply:
        """Send one request to ``server`` and relay its answer as it comes (progress, then the response).

        The first item is awaited here, so a refusal is raised before the caller answers anything."""
        member = await self.session(parent, server)
        sub = self._sub(parent, server, raw, member, name=name)
        items = self.gate.run_admitted(sub)
        try:
            first = await anext(items, None)
        except BaseException:
            await items.aclose()
            raise
        if first is None:
            raise UpstreamError(f"{server} closed the stream without an answer", reason="upstream_no_answer")
        item = first[1]
        if isinstance(item, Refusal):
            await _drain(items)
            raise item.error
        return Reply(sub.reply.kind, _relay(item, items, server), status=200)

    async def list_all(self, parent: Exchange, server: str, method: str, key: str) -> list[JSONObject]:
        """Every item of one list method of ``server`` (following ``nextCursor``, bounded)."""
        params = envelope(parent)
        items: list[JSONObject] = []
        for _ in range(MAX_LIST_PAGES):
            raw: JSONObject = {"jsonrpc": "2.0", "id": _internal_id(), "method": method, "params": params}
            answer = await self.ask(parent, server, raw)
            result = answer.raw.get("result")
            if not isinstance(result, dict) or not isinstance(result.get(key), list):
                raise UpstreamError(f"{server} did not answer {method}", reason="upstream_list_failed")
            items.extend(item for item in result[key] if isinstance(item, dict))  # type: ignore[union-attr]
            cursor = result.get("nextCursor")
            if len(items) >= MAX_ITEMS_PER_SERVER:
                log.warning("%s lists over %d %s: the rest is not aggregated", server, MAX_ITEMS_PER_SERVER, key)
                return items[:MAX_ITEMS_PER_SERVER]
            if not isinstance(cursor, str) or not cursor:
                return items
            params = {**params, "cursor": cursor}
        log.warning("%s: %s has more than %d pages: the rest is not aggregated", server, method, MAX_LIST_PAGES)
        return items

    # -- member sessions ----------------------------------------------------------------------------

    async def session(self, parent: Exchange, server: str) -> MemberSession | None:
        """The member session of ``server`` for the parent's aggregate session (opened when needed);
        None in the modern era."""
        fanout = parent.channel
        if parent.era == "modern" or not isinstance(fanout, Fanout):
            return None
        lock = fanout.locks.setdefault(server, asyncio.Lock())
        async with lock:
            member = fanout.members.get(server)
            if member is not None:
                try:
                    fanout.store.get(member.id, parent.principal, server)
                    return member
                except SessionRejected:  # expired while the aggregate session was used for other servers
                    del fanout.members[server]
            member = await self._initialize(parent, fanout, server)
            if fanout.closed:  # the aggregate session ended meanwhile: do not leave this one behind
                await _close_session(fanout.store, member.id)
                raise SessionRejected("the aggregate session ended", reason="session_unknown")
            fanout.members[server] = member
            return member

    async def _initialize(self, parent: Exchange, fanout: Fanout, server: str) -> MemberSession:
        params: JSONObject = {"capabilities": {}, **fanout.client}
        raw: JSONObject = {"jsonrpc": "2.0", "id": _internal_id(), "method": "initialize", "params": params}
        sub = self._sub(parent, server, raw, None)
        try:
            answer = await _final(self.gate.run_admitted(sub), server)
        except BaseException:
            session = sub.maybe_session
            if session is not None:
                await _close_session(fanout.store, session.id)
            raise
        session = sub.maybe_session
        result = answer.raw.get("result")
        if session is None or not isinstance(result, dict):  # an error answer: the reply stage ended it
            raise UpstreamError(f"{server} refused initialize", reason="upstream_initialize_failed")
        version = result.get("protocolVersion")
        capabilities = result.get("capabilities")
        member = MemberSession(session.id, version if isinstance(version, str) else None, plain(capabilities))
        done: JSONObject = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        await _drain_or_raise(self.gate.run_admitted(self._sub(parent, server, done, member)))
        return member

    # -- building sub-exchanges ---------------------------------------------------------------------

    def _sub(
        self, parent: Exchange, server: str, raw: JSONObject, member: MemberSession | None, *, name: str | None = None
    ) -> Exchange:
        method = raw.get("method")
        headers = {
            k: v
            for k, v in parent.http.headers.items()
            if k not in _DROPPED_HEADERS and (method == "tools/call" or not k.startswith("mcp-param-"))
        }
        if isinstance(method, str):
            headers["mcp-method"] = method
        if name is not None:
            headers["mcp-name"] = encode_header_value(name)  # 2026-07-28: base64-wrapped unless plain ASCII
        version = parent.http.headers.get("mcp-protocol-version")
        if member is not None:
            headers["mcp-session-id"] = member.id
            version = member.version
        if version is not None:
            headers["mcp-protocol-version"] = version
        http = dataclasses.replace(
            parent.http, method="POST", path=f"/mcp/{server}", headers=headers, read_body=_no_body
        )
        upstream = self.upstreams[server]
        sub = Exchange(http, server, upstream, f"{parent.request_id}/{server}")
        message = classify(raw)
        sub.principal = parent.principal
        sub.body = Body((message,), batch=False, data=orjson.dumps(raw))
        sub.message = message
        return sub


def _internal_id() -> str:
    return f"mcp-bastion-{secrets.token_hex(8)}"


async def _no_body() -> bytes:
    raise InternalError("a sub-request has no body to read")


async def _final(items: Items, server: str) -> Message:
    """The final response of a sub-exchange, after letting it end (its audit record says allowed, not
    abandoned); a refusal is raised."""
    answer: Message | None = None
    async with contextlib.aclosing(items):
        async for _, item in items:
            if isinstance(item, Refusal):
                raise item.error
            message = item.message
            if message is not None and message.kind == "response":
                answer = message
    if answer is None:
        raise UpstreamError(f"{server} closed the stream without an answer", reason="upstream_no_answer")
    return answer


async def _drain_or_raise(items: Items) -> None:
    async with contextlib.aclosing(items):
        async for _, item in items:
            if isinstance(item, Refusal):
                raise item.error


async def _drain(items: Items) -> None:
    async with contextlib.aclosing(items):
        async for _ in items:
            pass


async def _relay(first: Event, items: Items, server: str) -> AsyncIterator[Event]:
    """A member's events for the caller: notifications and the response; server-to-client requests are
    dropped (the aggregate offered members no client capabilities, and could not route the answer)."""
    async with contextlib.aclosing(items):
        pending: Event | None = first
        while True:
            if pending is None:
                pair = await anext(items, None)
                if pair is None:
                    return
                if isinstance(pair[1], Refusal):
                    raise pair[1].error
                pending = pair[1]
            event, pending = pending, None
            message = event.message
            if message is not None and message.kind == "request":
                log.info("%s sent a %s request on an aggregate stream: dropped", server, message.method)
                continue
            if message is not None and message.kind == "response":
                await _drain(items)  # let the sub-exchange end (and be audited) before the caller's does
                yield event
                return
            yield event


async def _close_session(store: SessionStore, session_id: str) -> None:
    session = store.pop(session_id)
    if session is not None:
        await session.channel.aclose()


def envelope(parent: Exchange) -> JSONObject:
    """Params carrying only the caller's protocol envelope (``_meta`` ``io.modelcontextprotocol/*``): what
    a request the aggregate makes up needs in the modern era."""
    meta = parent.message.params.get("_meta")
    if not isinstance(meta, dict):
        return {}
    return {"_meta": {k: v for k, v in meta.items() if k.startswith("io.modelcontextprotocol/")}}


def plain(value: JSONValue) -> JSONObject:
    """``value`` when it is an object, else an empty one."""
    return value if isinstance(value, dict) else {}
