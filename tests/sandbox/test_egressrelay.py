"""Relaying an allowed connection (``sandbox/egressrelay.py``): the status the audit record gives a plain
request's response, read from the response's first bytes only; and a plain request followed by a second one
on the same connection, which reaches the origin whole while the second never does, however the bytes are
split into reads. Through a real proxy with real sockets, plus the status reader on its own."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from mcp_bastion.sandbox.egressrelay import STATUS_BYTES, ResponseStatus
from tests.sandbox.egress_fixtures import (
    BOUND,
    LOCAL,
    anyio_backend,  # noqa: F401 -- the fixture: every test here runs on asyncio and on uvloop
    ask,
    expect,
    proxied_origin,
    running,
    serving,
    status,
)

pytestmark = pytest.mark.anyio


# -- the response's status ------------------------------------------------------------------------------


@asynccontextmanager
async def scripted_origin(chunks: Sequence[bytes], go: asyncio.Queue[None]) -> AsyncIterator[int]:
    """An origin that reads a request head, then sends ``chunks`` one at a time, each once ``go`` says so
    (after the client has read the one before: the proxy cannot read two chunks at once), and closes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            for chunk in chunks:
                await go.get()
                writer.write(chunk)
                await writer.drain()
            writer.write_eof()
            await reader.read()
        finally:
            writer.close()

    async with serving(handle) as port:
        yield port


@pytest.mark.parametrize(
    ("chunks", "code"),
    [
        pytest.param([b"HTTP/1.1 200", b" OK\r\nContent-Length: 13\r\n\r\n", b"HTTP/1.1 404 "], 200, id="short-first"),
        pytest.param([b"H", b"TTP/1.1 2", b"04 No Content\r\n\r\n"], 204, id="byte-by-byte"),
        pytest.param([b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 201 Created\r\n\r\n"], 201, id="continue"),
        pytest.param([b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\n\r\n"], 201, id="continue-one-read"),
        pytest.param(
            [b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n", b"HTTP/1.1 200 OK\r\n", b"\r\n"],
            200,
            id="early-hints",
        ),
        pytest.param([b"SSH-2.0-OpenSSH_9.6\r\n", b"HTTP/1.1 200 OK\r\n\r\n"], None, id="not-http"),
    ],
)
async def test_status_is_the_final_one_from_the_first_bytes(
    tmp_path: Path, chunks: list[bytes], code: int | None
) -> None:
    go: asyncio.Queue[None] = asyncio.Queue()
    async with (
        scripted_origin(chunks, go) as port,
        running(tmp_path, [f"127.0.0.1:{port}"], allowed_networks=LOCAL) as (proxy, audit),
    ):
        with anyio.fail_after(BOUND):
            reader, writer = await asyncio.open_unix_connection(proxy.socket_path())
            writer.write(b"GET http://127.0.0.1:%d/ HTTP/1.1\r\n\r\n" % port)
            for chunk in chunks:
                go.put_nowait(None)
                assert await reader.readexactly(len(chunk)) == chunk
            assert await reader.read(-1) == b""
            writer.close()
        [record] = await audit.wait()
    expect(record, decision="allow", status=code, end="closed", bytes_down=len(b"".join(chunks)))


def fed(*chunks: bytes) -> int | None:
    reader = ResponseStatus()
    for chunk in chunks:
        reader.feed(chunk)
    return reader.code


def test_status_reader_stops_at_the_final_status() -> None:
    assert fed(b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 500 Smuggled\r\n\r\n") == 204
    assert fed(b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n", b"HTTP/1.1 404 ") == 200
    assert fed(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\nHTTP/1.1 5") == 101
    assert fed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nnot a chunk\r\n", b"HTTP/1.1 404 x\r\n") == 200


def test_status_reader_reads_a_bounded_prefix() -> None:
    hints = b"HTTP/1.1 103 Early Hints\r\n" + b"Link: </a.css>; rel=preload\r\n" * (STATUS_BYTES // 29) + b"\r\n"
    assert fed(hints, b"HTTP/1.1 200 OK\r\n\r\n") == 103  # the final status came too late: the last one seen
    assert fed(b"x" * STATUS_BYTES, b"HTTP/1.1 200 OK\r\n\r\n") is None


# -- one request per connection -------------------------------------------------------------------------


SECOND = {
    "connect": b"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n",
    "upgrade": b"GET http://127.0.0.1:{port}/ws HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    "plain": b"GET http://127.0.0.1:{port}/second HTTP/1.1\r\nHost: evil.test\r\n\r\n",
    "garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
}


@pytest.mark.parametrize("second", list(SECOND))
@pytest.mark.parametrize("arrival", ["with-the-head", "with-the-body"])
@pytest.mark.parametrize("first", [b"", b"Connection: close\r\n"], ids=["keep-alive", "close"])
async def test_a_pipelined_request_is_never_forwarded_and_the_first_is_whole(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, second: str, arrival: str, first: bytes
) -> None:
    async with proxied_origin(tmp_path) as (origin, proxy, audit):
        head = b"POST http://127.0.0.1:%d/first HTTP/1.1\r\n%bContent-Length: 4\r\n\r\n" % (origin.port, first)
        rest = b"body" + SECOND[second].replace(b"{port}", b"%d" % origin.port)
        with anyio.fail_after(BOUND):
            reader, writer = await asyncio.open_unix_connection(proxy.socket_path())
            if arrival == "with-the-head":
                writer.write(head + rest)  # one read for the proxy
            else:
                writer.write(head)
                await origin.next_head()  # the proxy has sent the head on: what follows is another read
                writer.write(rest)
            response = await reader.read(-1)
            writer.close()
        seen = await origin.next()
        [record] = await audit.wait()
        assert origin.seen.empty()
    assert status(response) == 200
    assert response.endswith(b"saw POST /first HTTP/1.1")
    assert (seen.body, seen.extra) == (b"body", b"")
    expect(record, decision="allow", reason="ok", status=200, end="closed", bytes_up=len(seen.head) + 4)
    assert str(record["detail"]).startswith("pipelining_not_supported")
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_a_single_request_is_not_marked_pipelined(tmp_path: Path) -> None:
    async with proxied_origin(tmp_path) as (origin, proxy, audit):
        response = await ask(proxy, b"GET http://127.0.0.1:%d/ HTTP/1.1\r\n\r\n\r\n" % origin.port)
        await origin.next()
        [record] = await audit.wait()
    assert status(response) == 200
    assert "detail" not in record
