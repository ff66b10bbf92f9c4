"""The stdio upstream against real children: `tests/upstream/stdio_server.py`, an `mcp` SDK server.

Driven at the JSON-RPC level, as the gate drives it: messages in, `Reply` events out.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, Final

import anyio
import orjson
import pytest

from mcp_bastion.errors import ConfigError, MethodNotAllowed, UpstreamError
from mcp_bastion.exchange import Principal
from mcp_bastion.jsonrpc.message import JSONValue, Message, parse_message
from mcp_bastion.upstream.base import Channel, Reply
from mcp_bastion.upstream.stdio import StdioUpstream

pytestmark = pytest.mark.anyio

SERVER: Final = Path(__file__).with_name("stdio_server.py")
WAIT: Final = 30.0
"""Bound on every wait: a cold child imports the SDK first."""

ALICE: Final = Principal("alice", "https://idp.test", "bearer")
BOB: Final = Principal("bob", "https://idp.test", "bearer")
MODERN: Final[dict[str, JSONValue]] = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
}
INITIALIZE: Final[dict[str, JSONValue]] = {
    "protocolVersion": "2025-11-25",
    "capabilities": {},
    "clientInfo": {"name": "test", "version": "0"},
}


def make_upstream(**options: Any) -> StdioUpstream:
    settings: dict[str, Any] = {
        "env": {"STDIO_TEST_VISIBLE": "yes"},
        "cwd": None,
        "max_message_bytes": 1 << 20,
        "max_json_depth": 64,
        "request_timeout": WAIT,
        **options,
    }
    command = settings.pop("command", [sys.executable, str(SERVER)])
    return StdioUpstream("test", command, **settings)


@pytest.fixture
async def upstream() -> AsyncIterator[StdioUpstream]:
    up = make_upstream()
    await up.start()
    try:
        yield up
    finally:
        await up.aclose()


def message(obj: Mapping[str, JSONValue]) -> Message:
    return parse_message(orjson.dumps(obj), max_depth=64)


async def send(channel: Channel, obj: Mapping[str, JSONValue]) -> Reply:
    with anyio.fail_after(WAIT):
        return await channel.send(message(obj), orjson.dumps(obj), {})


def request(msg_id: int | str, method: str, params: dict[str, JSONValue] | None = None) -> dict[str, JSONValue]:
    return {"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params or {}}


def tool_call(
    msg_id: int | str, name: str, meta: dict[str, JSONValue] | None = None, **arguments: JSONValue
) -> dict[str, JSONValue]:
    params: dict[str, JSONValue] = {"name": name, "arguments": arguments}
    if meta is not None:
        params["_meta"] = meta
    return request(msg_id, "tools/call", params)


async def collect(reply: Reply) -> list[Message]:
    """Every message of a reply, the response last."""
    assert reply.kind == "sse"
    with anyio.fail_after(WAIT):
        return [event.message async for event in reply.events if event.message is not None]


async def next_message(reply: Reply) -> Message:
    with anyio.fail_after(WAIT):
        event = await anext(reply.events)
    assert event.message is not None
    assert orjson.loads(event.data) == event.message.raw  # what is forwarded is what was parsed
    return event.message


async def call(channel: Channel, obj: Mapping[str, JSONValue]) -> Message:
    """Send a request and return its response."""
    messages = await collect(await send(channel, obj))
    assert messages[-1].kind == "response"
    assert messages[-1].id == obj["id"]
    return messages[-1]


def text(response: Message) -> str:
    result = response.raw["result"]
    assert isinstance(result, dict)
    content = result["content"]
    assert isinstance(content, list)
    assert isinstance(content[0], dict)
    value = content[0]["text"]
    assert isinstance(value, str)
    return value


async def failure(channel: Channel, obj: Mapping[str, JSONValue]) -> str:
    """The reason a request failed with, whether the send or the stream raised it."""
    with pytest.raises(UpstreamError) as caught:
        await collect(await send(channel, obj))
    return caught.value.reason


async def handshake(channel: Channel) -> Message:
    response = await call(channel, request(1, "initialize", INITIALIZE))
    reply = await send(channel, {"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert (reply.kind, reply.status) == ("accepted", 202)
    return response


async def session(up: StdioUpstream, principal: Principal = ALICE) -> Channel:
    channel = await up.open_session(principal)
    await handshake(channel)
    return channel


async def test_a_handshake_session_initializes_lists_and_calls(upstream: StdioUpstream) -> None:
    channel = await upstream.open_session(ALICE)
    initialized = await handshake(channel)
    result = initialized.raw["result"]
    assert isinstance(result, dict)
    assert result["serverInfo"] == {"name": "stdio-test", "version": "1.0.0"}

    listed = await call(channel, request("list-1", "tools/list"))
    result = listed.raw["result"]
    assert isinstance(result, dict)
    assert isinstance(result["tools"], list)
    assert {"echo", "crash", "slow"} <= {tool["name"] for tool in result["tools"] if isinstance(tool, dict)}
    assert text(await call(channel, tool_call(7, "echo", text="hello"))) == "hello"


async def test_each_gateway_session_gets_its_own_child(upstream: StdioUpstream) -> None:
    alice, bob, alice_again = [await session(upstream, p) for p in (ALICE, BOB, ALICE)]
    pids = {text(await call(channel, tool_call(2, "pid"))) for channel in (alice, bob, alice_again)}
    assert len(pids) == 3


async def test_modern_requests_share_the_principals_child(upstream: StdioUpstream) -> None:
    alice, alice_too, bob = (
        await upstream.stateless(ALICE),
        await upstream.stateless(ALICE),
        await upstream.stateless(BOB),
    )
    # Concurrent, and with the same client id: the upstream ids keep them apart on the shared child.
    first, second = await send(alice, tool_call(1, "pid", MODERN)), await send(alice_too, tool_call(1, "pid", MODERN))
    alice_pids = {text((await collect(reply))[-1]) for reply in (first, second)}
    bob_pid = text(await call(bob, tool_call(1, "pid", MODERN)))
    assert len(alice_pids) == 1
    assert bob_pid not in alice_pids
    assert text(await call(bob, tool_call(2, "echo", MODERN, text="modern"))) == "modern"

    with pytest.raises(MethodNotAllowed) as caught:
        await alice.listen({})
    assert caught.value.reason == "upstream_no_get_stream"
    await alice.aclose()  # a no-op: the child is the principal's
    assert text(await call(alice_too, tool_call(3, "pid", MODERN))) in alice_pids


async def test_an_idle_principal_child_is_reaped() -> None:
    up = make_upstream(idle_seconds=0.2)
    try:
        channel = await up.stateless(ALICE)
        before = text(await call(channel, tool_call(1, "pid", MODERN)))
        link = up.principal_link(ALICE.key)
        with anyio.fail_after(WAIT):
            await link.closed.wait()
        assert text(await call(channel, tool_call(2, "pid", MODERN))) != before
    finally:
        await up.aclose()


async def test_progress_goes_to_its_own_request_under_the_clients_token(upstream: StdioUpstream) -> None:
    channel = await session(upstream)
    meta: dict[str, JSONValue] = {"progressToken": "same-token"}
    # `gather` holds each call until both run, so the two really are in flight together.
    replies = {
        tag: await send(channel, tool_call(msg_id, "gather", meta, tag=tag, group="g", size=2))
        for msg_id, tag in ((10, "a"), (11, "b"))
    }
    for (tag, reply), msg_id in zip(replies.items(), (10, 11), strict=True):
        *progress, response = await collect(reply)
        assert response.id == msg_id
        assert text(response) == tag
        assert [m.method for m in progress] == ["notifications/progress"]
        assert [m.params["progressToken"] for m in progress] == ["same-token"]
        assert [m.params["message"] for m in progress] == [tag]


async def test_closing_a_reply_early_cancels_the_request_upstream(upstream: StdioUpstream) -> None:
    channel = await session(upstream)
    reply = await send(channel, tool_call(3, "slow", {"progressToken": 99}, tag="gone"))
    progress = await next_message(reply)
    assert (progress.method, progress.params["progressToken"]) == ("notifications/progress", 99)
    await reply.aclose()  # the client went away

    # The tool's cancellation handler sends a notification while nothing is in flight and no GET stream is
    # open: it waits in the backlog (or arrives just after) for the GET stream.
    listener = await channel.listen({})
    unsolicited = await next_message(listener)
    assert unsolicited.method == "notifications/tools/list_changed"
    assert text(await call(channel, tool_call(4, "was_cancelled", tag="gone"))) == "cancelled"


async def test_with_several_requests_in_flight_unsolicited_messages_go_to_the_get_stream(
    upstream: StdioUpstream,
) -> None:
    channel = await session(upstream)
    listener = await channel.listen({})
    replies = [await send(channel, tool_call(n, "gather", tag=str(n), group="n", size=2, notify=True)) for n in (1, 2)]
    # The first list_changed leaves the child before either response (each call notifies before it returns).
    assert (await next_message(listener)).method == "notifications/tools/list_changed"
    methods = [m.method for reply in replies for m in await collect(reply)]
    assert methods.count(None) == 2  # both responses
    assert methods.count("notifications/tools/list_changed") <= 1  # the second one rode its own request


async def test_a_clients_cancellation_is_translated(upstream: StdioUpstream) -> None:
    channel = await session(upstream)
    reply = await send(channel, tool_call("slow-1", "slow", {"progressToken": "t"}, tag="by-client"))
    await next_message(reply)
    cancel: dict[str, JSONValue] = {"requestId": "slow-1", "reason": "user pressed stop"}
    accepted = await send(channel, {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": cancel})
    assert accepted.status == 202
    assert await collect(reply) == []  # the stream ends without a response
    assert text(await call(channel, tool_call(5, "was_cancelled", tag="by-client"))) == "cancelled"

    unknown: dict[str, JSONValue] = {"requestId": "never-sent"}
    dropped = await send(channel, {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": unknown})
    assert dropped.status == 202


async def test_a_request_that_times_out_is_cancelled_upstream(upstream: StdioUpstream) -> None:
    channel = await session(upstream)
    upstream.request_timeout = 0.5  # from now on; the child started under the generous default
    with pytest.raises(UpstreamError) as caught:
        await collect(await send(channel, tool_call(3, "slow", tag="late")))
    assert caught.value.reason == "upstream_timeout"
    upstream.request_timeout = WAIT
    assert text(await call(channel, tool_call(4, "was_cancelled", tag="late"))) == "cancelled"


async def test_server_requests_get_gateway_ids_and_answers_go_back(upstream: StdioUpstream) -> None:
    channel = await session(upstream)
    reply = await send(channel, tool_call(8, "ask"))
    ping = await next_message(reply)
    assert (ping.kind, ping.method) == ("request", "ping")
    assert isinstance(ping.id, int)
    answered = await send(channel, {"jsonrpc": "2.0", "id": ping.id, "result": {}})
    assert answered.status == 202
    response = await next_message(reply)
    assert (response.id, text(response)) == (8, "pong")

    stray = await send(channel, {"jsonrpc": "2.0", "id": ping.id, "result": {}})  # answered already: dropped
    assert stray.status == 202


async def test_a_crash_fails_in_flight_requests_and_the_session_survives(upstream: StdioUpstream) -> None:
    channel = await session(upstream)
    before = text(await call(channel, tool_call(2, "pid")))
    assert await failure(channel, tool_call(3, "crash")) == "upstream_crashed"
    # No new initialize from the client: the gateway replayed the session into the restarted child.
    after = text(await call(channel, tool_call(4, "pid")))
    assert after != before
    assert text(await call(channel, tool_call(5, "echo", text="still here"))) == "still here"


async def test_a_crash_loop_breaks_the_channel() -> None:
    up = make_upstream(command=[sys.executable, "-c", "pass"], restart_backoff=(0, 0))
    try:
        channel = await up.open_session(ALICE)
        with anyio.fail_after(WAIT):
            while True:
                assert await failure(channel, request(1, "initialize", INITIALIZE)) == "upstream_crashed"
                try:
                    reply = await channel.listen({})  # refused only once the supervisor has given up
                except UpstreamError:
                    break
                await reply.aclose()
        with pytest.raises(UpstreamError) as caught:
            await channel.listen({})
        assert caught.value.reason == "upstream_crashed"
        assert await failure(channel, request(2, "initialize", INITIALIZE)) == "upstream_crashed"
    finally:
        await up.aclose()


async def test_the_child_sees_only_its_configured_environment(
    upstream: StdioUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BASTION_SECRET_TEST", "do-not-leak")
    channel = await session(upstream)
    names = set(text(await call(channel, tool_call(2, "env"))).split(","))
    assert "BASTION_SECRET_TEST" not in names
    assert {"PATH", "STDIO_TEST_VISIBLE"} <= names
    # LC_CTYPE: CPython sets it itself when it coerces a C locale (PEP 538).
    assert names <= {"PATH", "STDIO_TEST_VISIBLE", "LC_CTYPE"}


async def test_an_oversized_line_fails_the_request_and_restarts_the_child() -> None:
    up = make_upstream(max_message_bytes=64 * 1024)
    try:
        channel = await session(up)
        before = text(await call(channel, tool_call(2, "pid")))
        assert await failure(channel, tool_call(3, "big", size=200_000)) == "upstream_reply_too_large"
        assert text(await call(channel, tool_call(4, "pid"))) != before
        assert len(text(await call(channel, tool_call(5, "big", size=1000)))) == 1000
    finally:
        await up.aclose()


async def test_junk_on_stdout_is_logged_and_skipped(upstream: StdioUpstream, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mcp_bastion.upstream.stdio")
    await session(upstream)  # the junk line comes before the answer to initialize
    skipped = [r.getMessage() for r in caplog.records if "skipped a stdout line" in r.getMessage()]
    assert len(skipped) == 1
    assert "not a JSON-RPC message" in skipped[0]


class _Waiter(logging.Handler):
    def __init__(self, needle: str) -> None:
        super().__init__(logging.INFO)
        self.needle = needle
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.needle in record.getMessage():
            self.seen.set()


async def test_stderr_goes_to_the_log_not_to_the_client(upstream: StdioUpstream) -> None:
    log = logging.getLogger("mcp_bastion.upstream.stdio")
    waiter = _Waiter("stderr: stdio test server: started")
    log.addHandler(waiter)
    previous = log.level
    log.setLevel(logging.INFO)
    try:
        channel = await upstream.open_session(ALICE)
        messages = await collect(await send(channel, request(1, "initialize", INITIALIZE)))
        assert [m.kind for m in messages] == ["response"]
        with anyio.fail_after(WAIT):
            await waiter.seen.wait()
    finally:
        log.removeHandler(waiter)
        log.setLevel(previous)


async def test_a_second_listener_replaces_the_first(upstream: StdioUpstream) -> None:
    channel = await session(upstream)
    first = await channel.listen({})
    second = await channel.listen({})
    assert await collect(first) == []
    await second.aclose()


async def test_closing_a_session_stops_its_child_and_fails_its_requests(upstream: StdioUpstream) -> None:
    channel = await session(upstream)
    pid = int(text(await call(channel, tool_call(2, "pid"))).split("-")[0])  # "<pid>-<tag>"
    # `hang` never answers, not even the "Connection closed" error the SDK sends for in-flight requests
    # when its stdin ends: the stop has to escalate to SIGTERM, and the request has to be failed by us.
    reply = await send(channel, tool_call(3, "hang", {"progressToken": 1}))
    await next_message(reply)
    with anyio.fail_after(WAIT):
        await channel.aclose()
    with pytest.raises(UpstreamError) as caught:
        await collect(reply)
    assert caught.value.reason == "upstream_closed"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_closing_the_upstream_stops_every_child() -> None:
    up = make_upstream()
    channels = [await up.open_session(ALICE), await up.stateless(BOB)]
    await handshake(channels[0])
    tagged = [text(await call(c, tool_call(2, "pid", None if i == 0 else MODERN))) for i, c in enumerate(channels)]
    pids = [int(answer.split("-")[0]) for answer in tagged]  # "<pid>-<tag>"
    with anyio.fail_after(WAIT):
        await up.aclose()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    with pytest.raises(UpstreamError) as caught:
        await up.open_session(ALICE)
    assert caught.value.reason == "upstream_closed"


async def test_a_missing_program_is_a_config_error() -> None:
    up = make_upstream(command=["no-such-mcp-server-binary"])
    with pytest.raises(ConfigError):
        await up.start()
