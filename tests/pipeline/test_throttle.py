"""Tests of the ``throttle`` stage on ``MemoryBuckets`` with a fake clock: which requests take from which
bucket, and the refusal (its reason names the bucket, ``retry_after`` says when to come back)."""

from __future__ import annotations

from typing import cast

import pytest

from mcp_bastion.errors import RateLimited
from mcp_bastion.exchange import Exchange, HTTPFacts, Principal
from mcp_bastion.jsonrpc.message import JSONValue, classify
from mcp_bastion.pipeline.throttle import Throttle
from mcp_bastion.policy.ratelimit import MemoryBuckets, Rate
from mcp_bastion.upstream.base import Upstream

pytestmark = pytest.mark.anyio

TWO = Rate(burst=2, per_second=0.5)
"""Two at once, then one more every 2 s."""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def principal(subject: str = "alice", client_id: str | None = None, issuer: str = "https://issuer") -> Principal:
    return Principal(subject, issuer, "bearer", client_id=client_id)


def exchange(raw: dict[str, JSONValue], who: Principal, endpoint: str = "up") -> Exchange:
    async def read() -> bytes:
        return b""

    facts = HTTPFacts("POST", f"/mcp/{endpoint}", "https", {}, "127.0.0.1:1", read)
    ex = Exchange(facts, endpoint, cast(Upstream, object()), "r1")
    ex.principal = who
    ex.message = classify(raw)
    return ex


def request(method: str = "tools/list", params: dict[str, JSONValue] | None = None) -> dict[str, JSONValue]:
    raw: dict[str, JSONValue] = {"jsonrpc": "2.0", "id": 1, "method": method}
    if params is not None:
        raw["params"] = params
    return raw


def call(tool: str) -> dict[str, JSONValue]:
    return request("tools/call", {"name": tool, "arguments": {}})


def throttle(
    clock: Clock, *, per_user: Rate | None = None, per_client: Rate | None = None, per_tool: Rate | None = None
) -> Throttle:
    return Throttle(MemoryBuckets(clock=clock), per_user=per_user, per_client=per_client, per_tool=per_tool)


async def refused(stage: Throttle, ex: Exchange) -> RateLimited:
    with pytest.raises(RateLimited) as caught:
        await stage(ex)
    return caught.value


async def test_per_user_refuses_after_the_burst_and_refills() -> None:
    clock = Clock()
    stage = throttle(clock, per_user=TWO)
    alice = principal("alice")
    await stage(exchange(request(), alice))
    await stage(exchange(call("t"), alice))
    error = await refused(stage, exchange(request("ping"), alice))
    assert error.reason == "rate_limited_user"
    assert error.retry_after == pytest.approx(2.0)
    assert error.http_status == 429
    await stage(exchange(request(), principal("bob")))  # another user has their own bucket
    # Same subject from another issuer is another person.
    await stage(exchange(request(), principal("alice", issuer="https://elsewhere")))
    clock.now += 2.0
    await stage(exchange(request(), alice))
    assert (await refused(stage, exchange(request(), alice))).reason == "rate_limited_user"


async def test_per_client_counts_every_user_of_the_client() -> None:
    clock = Clock()
    stage = throttle(clock, per_client=TWO)
    await stage(exchange(request(), principal("alice", client_id="claude")))
    await stage(exchange(request(), principal("bob", client_id="claude")))
    error = await refused(stage, exchange(request(), principal("carol", client_id="claude")))
    assert (error.reason, error.retry_after > 0) == ("rate_limited_client", True)
    await stage(exchange(request(), principal("alice", client_id="other")))
    for _ in range(5):  # no OAuth client: no client bucket
        await stage(exchange(request(), principal("alice")))


async def test_per_tool_counts_only_calls_of_that_tool() -> None:
    clock = Clock()
    stage = throttle(clock, per_tool=TWO)
    alice = principal("alice")
    await stage(exchange(call("search"), alice))
    await stage(exchange(call("search"), alice))
    error = await refused(stage, exchange(call("search"), alice))
    assert error.reason == "rate_limited_tool"
    assert error.retry_after == pytest.approx(2.0)
    for other in (
        exchange(call("delete"), alice),  # another tool
        exchange(call("search"), principal("bob")),  # another user
        exchange(call("search"), alice, endpoint="other"),  # the same name on another upstream
        exchange(request("tools/list"), alice),  # not a call
        exchange(request("resources/read", {"uri": "search"}), alice),
        exchange(request("prompts/get", {"name": "search"}), alice),
    ):
        await stage(other)
    await stage(exchange(call("delete"), alice))
    assert (await refused(stage, exchange(call("delete"), alice))).reason == "rate_limited_tool"


async def test_a_call_without_a_string_name_takes_no_tool_token() -> None:
    stage = throttle(Clock(), per_tool=TWO)
    for _ in range(5):
        await stage(exchange(request("tools/call", {"name": 7}), principal()))


async def test_every_dimension_applies_to_one_call() -> None:
    clock = Clock()
    stage = throttle(clock, per_user=Rate(burst=10, per_second=1), per_client=TWO, per_tool=Rate(5, 1))
    alice = principal("alice", client_id="claude")
    await stage(exchange(call("t"), alice))
    await stage(exchange(call("t"), alice))
    assert (await refused(stage, exchange(call("t"), alice))).reason == "rate_limited_client"


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param({"jsonrpc": "2.0", "method": "notifications/initialized"}, id="notification"),
        pytest.param({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {}}, id="cancelled"),
        pytest.param({"jsonrpc": "2.0", "id": 9, "result": {}}, id="response"),
        pytest.param({"jsonrpc": "2.0", "id": 9, "error": {"code": -1, "message": "no"}}, id="error-response"),
    ],
)
async def test_notifications_and_responses_are_not_counted(raw: dict[str, JSONValue]) -> None:
    clock = Clock()
    stage = throttle(clock, per_user=TWO, per_client=TWO, per_tool=TWO)
    alice = principal("alice", client_id="claude")
    for _ in range(10):
        await stage(exchange(raw, alice))
    await stage(exchange(call("t"), alice))  # the buckets are still full
    await stage(exchange(call("t"), alice))
    await refused(stage, exchange(call("t"), alice))


async def test_an_exchange_without_a_message_is_not_counted() -> None:
    stage = throttle(Clock(), per_user=Rate(burst=1, per_second=1))

    async def read() -> bytes:
        return b""

    get = Exchange(HTTPFacts("GET", "/mcp/up", "https", {}, "127.0.0.1:1", read), "up", cast(Upstream, object()), "g")
    get.principal = principal()
    for _ in range(3):
        await stage(get)


async def test_no_rates_no_limits() -> None:
    stage = throttle(Clock())
    for _ in range(50):
        await stage(exchange(call("t"), principal(client_id="c")))
