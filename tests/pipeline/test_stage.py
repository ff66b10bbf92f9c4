"""The driver, playbook-style: which stages ran, the refusal, and exactly one audit record — every time."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import ClassVar

import orjson
import pytest

from mcp_bastion.audit.sink import MemorySink
from mcp_bastion.errors import Forbidden, InternalError, UpstreamError
from mcp_bastion.exchange import Exchange, HTTPFacts, Principal
from mcp_bastion.jsonrpc.message import Message, parse_body, parse_message
from mcp_bastion.pipeline.stage import Gate, Refusal
from mcp_bastion.upstream.base import Channel, Event, Reply, Upstream, no_events

pytestmark = pytest.mark.anyio

BODY = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo"}})


class Recorder:
    """A stage that records that it ran, and optionally raises."""

    name: ClassVar[str] = "recorder"

    def __init__(self, label: str, log: list[str], exc: BaseException | None = None) -> None:
        self.label, self.log, self.exc = label, log, exc

    async def __call__(self, exchange: Exchange) -> None:
        self.log.append(self.label)
        if self.exc is not None:
            raise self.exc


class SetPrincipalAndBody:
    name: ClassVar[str] = "setup"

    def __init__(self, body: bytes = BODY) -> None:
        self.body = body

    async def __call__(self, exchange: Exchange) -> None:
        exchange.principal = Principal("alice", "https://issuer", "bearer")
        exchange.body = parse_body(self.body, max_depth=16)


class FakeForward:
    """Answers each request with a progress notification and then its response."""

    name: ClassVar[str] = "forward"

    async def __call__(self, exchange: Exchange) -> None:
        message = exchange.message
        if message.kind != "request":
            exchange.reply = Reply("accepted", no_events(), status=202)
            return

        async def events() -> AsyncIterator[Event]:
            progress = orjson.dumps({"jsonrpc": "2.0", "method": "notifications/progress", "params": {}})
            yield Event(progress, parse_message(progress, max_depth=8))
            answer = orjson.dumps({"jsonrpc": "2.0", "id": message.id, "result": {}})
            yield Event(answer, parse_message(answer, max_depth=8))

        exchange.reply = Reply("sse", events())


class NoUpstream:
    name = "up"

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def open_session(self, principal: Principal) -> Channel:
        raise AssertionError("not used")

    async def stateless(self, principal: Principal) -> Channel:
        raise AssertionError("not used")


def exchange(method: str = "POST") -> Exchange:
    async def read() -> bytes:
        return BODY

    facts = HTTPFacts(method, "/mcp/up", "https", {}, "127.0.0.1:1", read)
    upstream: Upstream = NoUpstream()
    return Exchange(facts, "up", upstream, "r1")


async def run(gate: Gate, ex: Exchange) -> list[object]:
    return [item async for _, item in gate.run(ex)]


def gate(
    admission: list[object], request: list[object], sink: MemorySink, response: list[object] | None = None
) -> Gate:
    return Gate(admission=admission, request=request, response=response or [], audit=sink)  # type: ignore[arg-type]


async def test_allowed_exchange_runs_every_stage_and_audits_once() -> None:
    log: list[str] = []
    sink = MemorySink()
    g = gate([SetPrincipalAndBody(), Recorder("a", log)], [Recorder("b", log), FakeForward()], sink)
    items = await run(g, exchange())
    assert log == ["a", "b"]
    assert [type(i) for i in items] == [Event, Event]
    assert len(sink.records) == 1
    record = sink.records[0]
    assert (record["decision"], record["reason"], record["principal"], record["method"]) == (
        "allow",
        "ok",
        "alice",
        "tools/call",
    )


async def test_rejection_stops_the_exchange_with_its_reason() -> None:
    log: list[str] = []
    sink = MemorySink()
    g = gate([SetPrincipalAndBody(), Recorder("a", log, Forbidden(reason="policy_denied"))], [Recorder("b", log)], sink)
    items = await run(g, exchange())
    assert log == ["a"]
    assert len(items) == 1
    assert isinstance(items[0], Refusal)
    assert items[0].error.reason == "policy_denied"
    assert [(r["decision"], r["reason"], r["status"]) for r in sink.records] == [("deny", "policy_denied", 403)]


@pytest.mark.parametrize("where", ["admission", "request"])
async def test_unexpected_exception_fails_closed_with_one_record(where: str) -> None:
    """The fail-closed proof: a stage raising KeyError yields InternalError to the client and one record."""
    log: list[str] = []
    sink = MemorySink()
    boom = Recorder("boom", log, KeyError("secret-internal-detail"))
    admission: list[object] = [SetPrincipalAndBody()] + ([boom] if where == "admission" else [])
    request: list[object] = ([boom] if where == "request" else []) + [Recorder("after", log), FakeForward()]
    items = await run(gate(admission, request, sink), exchange())
    assert log == ["boom"]
    assert len(items) == 1
    assert isinstance(items[0], Refusal)
    error = items[0].error
    assert isinstance(error, InternalError)
    assert error.public_message == "internal error"  # nothing of the KeyError reaches the client
    assert len(sink.records) == 1
    assert (sink.records[0]["decision"], sink.records[0]["reason"], sink.records[0]["status"]) == (
        "error",
        "internal_error",
        500,
    )
    assert "secret-internal-detail" in str(sink.records[0]["detail"])  # ... but the operator sees it


async def test_reading_a_field_before_its_stage_fails_closed() -> None:
    class ReadsTooEarly:
        name: ClassVar[str] = "early"

        async def __call__(self, exchange: Exchange) -> None:
            exchange.reply.kind  # noqa: B018 - the forward stage has not run yet: AttributeError

    sink = MemorySink()
    items = await run(gate([SetPrincipalAndBody()], [ReadsTooEarly()], sink), exchange())
    assert isinstance(items[0], Refusal)
    assert isinstance(items[0].error, InternalError)
    assert len(sink.records) == 1


async def test_response_stage_error_after_streaming_started() -> None:
    class Breaks:
        name: ClassVar[str] = "breaks"

        async def __call__(self, exchange: Exchange, event: Event) -> Event:
            if event.message is not None and event.message.kind == "response":
                raise UpstreamError(reason="upstream_wrong_id")
            return event

    sink = MemorySink()
    items = await run(gate([SetPrincipalAndBody()], [FakeForward()], sink, [Breaks()]), exchange())
    assert isinstance(items[0], Event)
    assert isinstance(items[1], Refusal)
    assert [(r["decision"], r["reason"]) for r in sink.records] == [("error", "upstream_wrong_id")]


async def test_batch_gives_one_record_per_message() -> None:
    batch = orjson.dumps(
        [
            {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "x"}},
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
        ]
    )

    class DenyCalls:
        name: ClassVar[str] = "deny"

        async def __call__(self, exchange: Exchange) -> None:
            if exchange.message.method == "tools/call":
                raise Forbidden(reason="policy_denied")

    sink = MemorySink()
    items = await run(gate([SetPrincipalAndBody(batch)], [DenyCalls(), FakeForward()], sink), exchange())
    assert len([i for i in items if isinstance(i, Refusal)]) == 1
    assert [(r["jsonrpc_id"], r["decision"]) for r in sink.records] == [(1, "allow"), (2, "deny"), (None, "allow")]
    assert len({r["request_id"] for r in sink.records}) == 3


async def test_client_going_away_is_audited() -> None:
    sink = MemorySink()
    g = gate([SetPrincipalAndBody()], [FakeForward()], sink)
    items = g.run(exchange())
    await anext(items)  # the first event went out ...
    await items.aclose()  # ... and then the client disconnected
    assert [(r["decision"], r["reason"]) for r in sink.records] == [("abandoned", "client_disconnected")]


def test_message_helper_types() -> None:
    message = parse_message(BODY, max_depth=8)
    assert isinstance(message, Message)
    assert message.kind == "request"
    assert isinstance(message.params, Mapping)
