"""A tiny HTTP/1.1 origin on 127.0.0.1 for tests that fetch web pages (through the sandbox's egress proxy).

    async with web_origin({"/robots.txt": ("text/plain", b"User-agent: *\\nAllow: /\\n")}) as origin:
        ... fetch f"http://localhost:{origin.port}/robots.txt" ...
        assert origin.requests[0].path == "/robots.txt"

It serves fixed pages by path (404 otherwise), one request per connection (``Connection: close``), and
records each request (over TLS too): its line, its header fields, and the peer's address. It runs on the test's event
loop, so it needs no thread and stops with the test.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio

BOUND = 10.0
"""Seconds a connection may take to send its head, and the origin to stop."""


@dataclass(frozen=True)
class Request:
    peer: str
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Origin:
    pages: Mapping[str, tuple[str, bytes]]
    """Path → (content type, body)."""
    port: int = 0
    requests: list[Request] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            with anyio.fail_after(BOUND):
                head = await reader.readuntil(b"\r\n\r\n")
            line, *fields = head.decode("latin-1").split("\r\n")
            method, target, _ = line.split(" ", 2)
            headers = {}
            for entry in fields:
                if ":" in entry:
                    name, value = entry.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            self.requests.append(Request(str(writer.get_extra_info("peername")[0]), method, target, headers))
            page = self.pages.get(target.split("?", 1)[0])
            status, (kind, body) = ("200 OK", page) if page is not None else ("404 Not Found", ("text/plain", b"no"))
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            pass
        finally:
            writer.close()

    def paths(self) -> list[str]:
        return [request.path for request in self.requests]


@asynccontextmanager
async def web_origin(
    pages: Mapping[str, tuple[str, bytes]], *, tls: ssl.SSLContext | None = None
) -> AsyncIterator[Origin]:
    """Serve ``pages`` on a fresh loopback port (over TLS with ``tls``, a server context)."""
    origin = Origin(pages)
    server = await asyncio.start_server(origin.handle, "127.0.0.1", 0, ssl=tls)
    origin.port = server.sockets[0].getsockname()[1]
    try:
        yield origin
    finally:
        server.close()
        with anyio.fail_after(BOUND):
            await server.wait_closed()
