"""A lean asyncio HTTP/1.1 load generator, the fallback when `wrk` is not installed.

    python -m bench.pyload '{"url": ..., "headers": {...}, "body": "...", "connections": 16, "seconds": 5}'

N keep-alive connections each send the same POST back to back for the given time (uvloop and httptools
when available); prints `BENCH {json}` in the format of the wrk script in `bench.load`. It costs far more
CPU per request than wrk, which the benchmark's "client" column shows.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
import time
from typing import Any, cast
from urllib.parse import urlsplit

import httptools  # type: ignore[import-untyped,unused-ignore]


class _Stats:
    def __init__(self, stop_at: float) -> None:
        self.stop_at = stop_at
        self.latencies_ns: list[int] = []
        self.errors = {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}


class _RequestMaker:
    """The POST bytes, with a fresh JSON-RPC id in place of `__ID__` each time (ids must not repeat)."""

    def __init__(self, head: str, body: str) -> None:
        self._head = head
        self._prefix, _, self._suffix = body.partition("__ID__")
        self._templated = "__ID__" in body
        self._counter = 0

    def __call__(self) -> bytes:
        body = self._prefix
        if self._templated:
            self._counter += 1
            body = f"{self._prefix}{self._counter}{self._suffix}"
        data = body.encode()
        return f"{self._head}Content-Length: {len(data)}\r\n\r\n".encode() + data


class _Connection(asyncio.Protocol):
    """Sends `request`, waits for the whole response, repeats until `stats.stop_at`."""

    def __init__(self, request: _RequestMaker, stats: _Stats) -> None:
        self._request = request
        self._stats = stats
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._sent_ns = 0
        self._busy = False
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        self._send()

    def _send(self) -> None:
        assert self._transport is not None
        self._busy = True
        self._sent_ns = time.perf_counter_ns()
        self._transport.write(self._request())

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._stats.errors["read"] += 1
            assert self._transport is not None
            self._transport.close()

    def on_message_complete(self) -> None:
        self._busy = False
        self._stats.latencies_ns.append(time.perf_counter_ns() - self._sent_ns)
        if self._parser.get_status_code() >= 400:
            self._stats.errors["status"] += 1
        assert self._transport is not None
        if time.monotonic() < self._stats.stop_at and self._parser.should_keep_alive():
            self._send()
        else:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._busy:
            self._stats.errors["read"] += 1
        if not self.closed.done():
            self.closed.set_result(None)


async def _drive(spec: dict[str, Any], stats: _Stats) -> None:
    parts = urlsplit(spec["url"])
    host = parts.hostname or "127.0.0.1"
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    context = ssl.create_default_context(cafile=spec.get("cafile")) if tls else None
    head = [f"POST {parts.path or '/'} HTTP/1.1", f"Host: {parts.netloc}"]
    head += [f"{k}: {v}" for k, v in spec["headers"].items()]
    request = _RequestMaker("".join(f"{line}\r\n" for line in head), spec["body"])
    loop = asyncio.get_running_loop()

    async def one_connection() -> None:
        while time.monotonic() < stats.stop_at:
            try:
                _, protocol = await loop.create_connection(lambda: _Connection(request, stats), host, port, ssl=context)
            except OSError:
                stats.errors["connect"] += 1
                await asyncio.sleep(0.05)
                continue
            remaining = stats.stop_at - time.monotonic() + 5
            try:
                await asyncio.wait_for(asyncio.shield(protocol.closed), max(remaining, 0.1))
            except TimeoutError:
                stats.errors["timeout"] += 1
                return

    await asyncio.gather(*(one_connection() for _ in range(int(spec["connections"]))))


def _percentile(sorted_ns: list[int], pct: float) -> int:
    if not sorted_ns:
        return 0
    index = min(len(sorted_ns) - 1, max(0, round(pct / 100 * len(sorted_ns)) - 1))
    return sorted_ns[index] // 1000


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    started = time.monotonic()
    stats = _Stats(stop_at=started + float(spec["seconds"]))
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        asyncio.run(_drive(spec, stats))
    else:
        uvloop.run(_drive(spec, stats))
    elapsed = time.monotonic() - started
    lat = sorted(stats.latencies_ns)
    result = {
        "requests": len(lat),
        "duration_us": int(elapsed * 1e6),
        **stats.errors,
        "p50_us": _percentile(lat, 50),
        "p90_us": _percentile(lat, 90),
        "p99_us": _percentile(lat, 99),
        "mean_us": (sum(lat) / len(lat) / 1000) if lat else 0.0,
    }
    print("BENCH " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
