"""The HTTP upstream maps every way an upstream can misbehave to one specific, stable error reason.

The upstream is a raw asyncio server answering canned bytes, so each failure is exactly the one named.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import anyio
import orjson
import pytest

from mcp_bastion.errors import BastionError, MethodNotAllowed, SessionRejected, UpstreamError, UpstreamTimeout
from mcp_bastion.exchange import Principal
from mcp_bastion.jsonrpc.message import parse_message
from mcp_bastion.upstream.http import HTTPUpstream

pytestmark = pytest.mark.anyio

ALICE = Principal("alice", "https://issuer", "bearer")
CALL = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "x"}})


def http(status: str, ctype: str, body: bytes, extra: str = "") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


@contextlib.asynccontextmanager
async def canned(answer: bytes | None) -> AsyncIterator[str]:
    """A server that reads one request and sends ``answer`` (None: never answers until the test ends)."""
    done = asyncio.Event()
    handlers: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.lower().split(b"\r\n")
            length = next((int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length")), 0)
            await reader.readexactly(length)
            if answer is None:
                await done.wait()
            else:
                writer.write(answer)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/mcp"
    finally:
        done.set()
        server.close()
        await server.wait_closed()
        with anyio.fail_after(5):
            await asyncio.gather(*handlers, return_exceptions=True)


def upstream(url: str, *, timeout: float = 5, max_bytes: int = 4096) -> HTTPUpstream:
    return HTTPUpstream(
        "up",
        url,
        ssl_context=None,
        connect_timeout=2,
        request_timeout=timeout,
        max_message_bytes=max_bytes,
        max_json_depth=32,
    )


async def send(up: HTTPUpstream, *, stateful: bool = False) -> list[bytes]:
    await up.start()
    try:
        channel = await (up.open_session(ALICE) if stateful else up.stateless(ALICE))
        if stateful:
            channel.session_id = "upstream-session"  # type: ignore[attr-defined]
        reply = await channel.send(parse_message(CALL, max_depth=8), CALL, {})
        return [event.data async for event in reply.events]
    finally:
        await up.aclose()


@pytest.mark.parametrize(
    ("answer", "error", "reason"),
    [
        pytest.param(
            http("500 Oops", "text/html", b"<h1>stack trace</h1>"), UpstreamError, "upstream_http_error", id="500-html"
        ),
        pytest.param(
            http("200 OK", "application/json", b"{not json"), UpstreamError, "upstream_bad_reply", id="bad-json"
        ),
        pytest.param(
            http("200 OK", "application/json", b'{"jsonrpc":"2.0"}'),
            UpstreamError,
            "upstream_bad_reply",
            id="not-jsonrpc",
        ),
        pytest.param(http("200 OK", "text/plain", b"hello"), UpstreamError, "upstream_bad_reply", id="wrong-type"),
        pytest.param(
            http("200 OK", "application/json", b"[" * 5000 + b"]" * 5000),
            UpstreamError,
            "upstream_reply_too_large",
            id="too-large",
        ),
        pytest.param(
            http("200 OK", "text/event-stream", b"data: " + b"x" * 5000 + b"\n\n"),
            UpstreamError,
            "upstream_event_too_large",
            id="sse-event-too-large",
        ),
        pytest.param(b"garbage\r\n\r\n", UpstreamError, "upstream_bad_reply", id="not-http"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
            UpstreamError,
            "upstream_disconnected",
            id="cut-short",
        ),
    ],
)
async def test_misbehaving_upstreams(answer: bytes, error: type[BastionError], reason: str) -> None:
    async with canned(answer) as url:
        with pytest.raises(error) as info, anyio.fail_after(10):
            await send(upstream(url))
    assert info.value.reason == reason


async def test_unreachable() -> None:
    async with canned(b"") as url:
        pass  # closed: nothing listens there any more
    with pytest.raises(UpstreamError) as info, anyio.fail_after(10):
        await send(upstream(url))
    assert info.value.reason == "upstream_unreachable"


async def test_silent_upstream_times_out() -> None:
    async with canned(None) as url:
        with pytest.raises(UpstreamTimeout), anyio.fail_after(10):
            await send(upstream(url, timeout=0.3))


async def test_expired_upstream_session() -> None:
    async with canned(http("404 Not Found", "application/json", b"{}")) as url:
        with pytest.raises(SessionRejected) as info, anyio.fail_after(10):
            await send(upstream(url), stateful=True)
    assert info.value.reason == "upstream_session_expired"


async def test_jsonrpc_error_with_4xx_is_passed_on() -> None:
    body = b'{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"bad"}}'
    async with canned(http("400 Bad Request", "application/json", body)) as url:
        with anyio.fail_after(10):
            assert await send(upstream(url)) == [body]


async def test_no_get_stream() -> None:
    async with canned(http("405 Method Not Allowed", "text/plain", b"")) as url:
        up = upstream(url)
        await up.start()
        try:
            channel = await up.open_session(ALICE)
            channel.session_id = "s"  # type: ignore[attr-defined]
            with pytest.raises(MethodNotAllowed) as info, anyio.fail_after(10):
                await channel.listen({})
        finally:
            await up.aclose()
    assert info.value.reason == "upstream_no_get_stream"
