"""Test doubles for the egress proxy: raw origin servers on 127.0.0.1, a proxy client over the Unix socket,
and a DNS that answers what the test says (installed on the running loop, where ``netguard`` asks); and
the usual pairing of a server on 127.0.0.1 with a proxy that may reach exactly it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest

from mcp_bastion.jsonrpc.message import JSONObject
from mcp_bastion.sandbox.egress import EgressProxy

BOUND = 10.0
"""Seconds any single step of a test may take."""
LOCAL = ["127.0.0.1/32"]
"""What tests add to reach their origins on 127.0.0.1 (loopback is refused by default)."""


@dataclass
class Seen:
    """What one origin connection received: the request head, its body, and bytes after the body."""

    peer: str
    head: bytes
    body: bytes
    extra: bytes

    @property
    def request_line(self) -> bytes:
        return self.head.split(b"\r\n", 1)[0]

    def header(self, name: str) -> list[str]:
        lines = self.head.decode("latin-1").split("\r\n")[1:]
        return [line.split(":", 1)[1].strip() for line in lines if line.lower().startswith(name.lower() + ":")]


@dataclass
class Origin:
    """An HTTP/1.1 origin: answers ``200 saw <request line>`` and closes, then records the rest."""

    port: int = 0
    seen: asyncio.Queue[Seen] = field(default_factory=asyncio.Queue)
    heads: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    """Each request head as soon as it arrives, before the body is read."""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.heads.put_nowait(head)
            seen = Seen(str(writer.get_extra_info("peername")[0]), head, b"", b"")
            length = seen.header("content-length")
            if length:
                seen.body = await reader.readexactly(int(length[0]))
            elif seen.header("transfer-encoding"):
                while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
                    seen.body += (await reader.readexactly(size + 2))[:-2]
                await reader.readuntil(b"\r\n")
            body = b"saw " + seen.request_line
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%b" % (len(body), body))
            if writer.can_write_eof():  # not over TLS
                writer.write_eof()
                seen.extra = await reader.read()  # whatever the proxy sends until it closes its side
            await self.seen.put(seen)
        finally:
            writer.close()

    async def next(self) -> Seen:
        with anyio.fail_after(BOUND):
            return await self.seen.get()

    async def next_head(self) -> bytes:
        with anyio.fail_after(BOUND):
            return await self.heads.get()


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


@asynccontextmanager
async def serving(handler: Any, *, tls: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    """Run ``handler`` as a TCP server on 127.0.0.1; yield its port. On exit, wait for every connection's
    handler to finish (the proxy must have closed its side)."""
    handlers: set[asyncio.Task[Any]] = set()

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        await handler(reader, writer)

    server = await asyncio.start_server(tracked, "127.0.0.1", 0, ssl=tls)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        with anyio.fail_after(BOUND):
            await asyncio.gather(*handlers)
            await server.wait_closed()


@asynccontextmanager
async def origin_server(*, tls: ssl.SSLContext | None = None) -> AsyncIterator[Origin]:
    origin = Origin()
    async with serving(origin.handle, tls=tls) as port:
        origin.port = port
        yield origin


def echo_server() -> contextlib.AbstractAsyncContextManager[int]:
    return serving(_echo)


def free_port() -> int:
    """A port on 127.0.0.1 with nothing listening (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Audit:
    """The proxy's audit sink: keeps the records and lets a test wait for them."""

    def __init__(self) -> None:
        self.records: list[JSONObject] = []
        self._changed = asyncio.Event()

    def __call__(self, record: JSONObject) -> None:
        self.records.append(record)
        self._changed.set()

    async def wait(self, count: int = 1) -> list[JSONObject]:
        """The records, once there are at least ``count``."""
        with anyio.fail_after(BOUND):
            while len(self.records) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.records


@asynccontextmanager
async def running(tmp_path: Path, allow: Sequence[str], **options: Any) -> AsyncIterator[tuple[EgressProxy, Audit]]:
    """A started proxy named ``srv`` and its audit sink."""
    audit = Audit()
    proxy = EgressProxy("srv", allow, audit, tmp_path, **options)
    await proxy.start()
    try:
        yield proxy, audit
    finally:
        with anyio.fail_after(BOUND):
            await proxy.aclose()


@asynccontextmanager
async def proxied_origin(tmp_path: Path, **options: Any) -> AsyncIterator[tuple[Origin, EgressProxy, Audit]]:
    """An origin on 127.0.0.1 and a running proxy whose allow-list names exactly it (``LOCAL`` opened)."""
    async with (
        origin_server() as origin,
        running(tmp_path, [f"127.0.0.1:{origin.port}"], allowed_networks=LOCAL, **options) as (proxy, audit),
    ):
        yield origin, proxy, audit


@asynccontextmanager
async def proxied_echo(tmp_path: Path, **options: Any) -> AsyncIterator[tuple[int, EgressProxy, Audit]]:
    """An echo server on 127.0.0.1 (its port) and a running proxy whose allow-list names exactly it."""
    async with (
        echo_server() as port,
        running(tmp_path, [f"127.0.0.1:{port}"], allowed_networks=LOCAL, **options) as (proxy, audit),
    ):
        yield port, proxy, audit


async def ask(proxy: EgressProxy, raw: bytes) -> bytes:
    """Send ``raw`` to the proxy and read its whole answer."""
    with anyio.fail_after(BOUND):
        reader, writer = await asyncio.open_unix_connection(proxy.socket_path())
        try:
            writer.write(raw)
            return await reader.read(-1)
        finally:
            writer.close()


def status(response: bytes) -> int:
    return int(response[9:12])


def expect(record: JSONObject, **fields: object) -> None:
    """An egress record of the proxy ``srv`` (see ``audit.record.egress_record``) with these fields."""
    assert record["kind"] == "egress"
    assert record["server"] == "srv"
    assert {key: record[key] for key in fields} == fields


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {"use_uvloop": False}), id="asyncio"),
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    """The stdlib loop, and uvloop (what the gateway serves on); a test module imports it to run on both."""
    return request.param


def install(dns: FakeDNS, monkeypatch: pytest.MonkeyPatch) -> FakeDNS:
    """Answer the running loop's lookups (where ``netguard`` asks) with ``dns`` for the rest of the test."""
    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", dns)
    return dns


class FakeDNS:
    """Stands in for ``loop.getaddrinfo``: ``answers[name]`` lists successive answers (the last repeats)."""

    def __init__(self, answers: dict[str, Sequence[Sequence[str]]]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
        self.calls.append(host)
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        answers = self.answers[host]
        chosen = answers[min(len(self.calls_for(host)) - 1, len(answers) - 1)]
        infos: list[tuple[Any, ...]] = []
        for address in chosen:
            if ":" in address:
                infos.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0)))
            else:
                infos.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)))
        return infos

    def calls_for(self, host: str) -> list[str]:
        return [call for call in self.calls if call == host]
