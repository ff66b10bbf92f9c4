"""Remote MCP servers over Streamable HTTP (MCP 2025-06-18 §Transports, and the 2026-07-28 single POST).

One keep-alive HTTP/1.1 connection pool per upstream for the process lifetime (``H1Pool``: a lean client
on asyncio protocols and httptools; building a client or an SSL context per request costs ~25 ms, and
aiohttp cost more CPU than the rest of the hop, see STACK.md). TCP connections carry no identity; what
identifies the user to the upstream travels per request, and each handshake-era gateway session maps to
exactly one upstream session (``Mcp-Session-Id``), so no upstream session is ever shared between principals.

Every request has one budget, ``request_timeout``, from sending it to the last byte of its reply (SSE
streams included), enforced as a deadline by the pool rather than by a task per request.

Foreign errors (the HTTP client's, timeouts) are translated here into ``UpstreamError``/``UpstreamTimeout``.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncGenerator, Mapping
from typing import Final
from urllib.parse import urlsplit

from mcp_bastion.delegation.static import NoAuth, UpstreamAuth
from mcp_bastion.errors import (
    BastionError,
    ConfigError,
    MalformedRequest,
    MethodNotAllowed,
    SessionRejected,
    UpstreamError,
    UpstreamTimeout,
)
from mcp_bastion.exchange import Principal
from mcp_bastion.jsonrpc.message import Message, parse_message
from mcp_bastion.tls.context import upstream_context
from mcp_bastion.upstream.base import Channel, Event, Reply, no_events, one_event
from mcp_bastion.upstream.h1 import BodyTooLarge, H1Error, H1Response, ProtocolError
from mcp_bastion.upstream.h1pool import H1Pool
from mcp_bastion.upstream.sse import SSEParser

ACCEPT = "application/json, text/event-stream"
_POST_HEADERS: Final = ((b"accept", ACCEPT.encode()), (b"content-type", b"application/json"))
_GET_HEADERS: Final = ((b"accept", b"text/event-stream"),)


class HTTPUpstream:
    """An MCP server reached over Streamable HTTP."""

    def __init__(
        self,
        name: str,
        url: str,
        *,
        ssl_context: ssl.SSLContext | None,
        connect_timeout: float,
        request_timeout: float,
        max_message_bytes: int,
        max_json_depth: int,
        auth: UpstreamAuth | None = None,
    ) -> None:
        self.name = name
        self.auth: UpstreamAuth = auth if auth is not None else NoAuth()
        """The user's credential for each request (``delegation``); the client's token never goes upstream."""
        self.url = url
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"upstreams.{name}.url: not an http(s) URL: {url!r}")
        https = parts.scheme == "https"
        if https and ssl_context is None:
            ssl_context = upstream_context(ca_bundle=None, client_cert=None, client_key=None)
        self._ssl = ssl_context if https else None
        self._host = parts.hostname
        self._port = parts.port or (443 if https else 80)
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        """The request target (origin-form: path and query) every request to this upstream goes to."""
        if not self.target.isascii() or any(c <= " " or c == "\x7f" for c in self.target):
            raise ConfigError(f"upstreams.{name}.url: the path must be ASCII without spaces (percent-encode it)")
        self._connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.max_message_bytes = max_message_bytes
        self.max_json_depth = max_json_depth
        self._pool: H1Pool | None = None

    async def start(self) -> None:
        # The pool keeps no cookies (one user's upstream state must not leak into another's requests over
        # the shared connections) and sends no Accept-Encoding (replies are parsed as they arrive, never
        # decompressed), nor a User-Agent.
        self._pool = H1Pool(
            self._host,
            self._port,
            ssl_context=self._ssl,
            server_hostname=self._host,
            connect_timeout=self._connect_timeout,
            max_connections=256,
            idle_seconds=60.0,
        )

    async def aclose(self) -> None:
        await self.auth.aclose()
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None

    @property
    def http(self) -> H1Pool:
        if self._pool is None:
            raise UpstreamError(f"upstream {self.name} is not started", reason="upstream_not_started")
        return self._pool

    def deadline(self) -> float:
        """The loop time by which a request started now must be answered in full."""
        return asyncio.get_running_loop().time() + self.request_timeout

    async def open_session(self, principal: Principal) -> Channel:
        return HTTPChannel(self, principal, stateful=True)

    async def stateless(self, principal: Principal) -> Channel:
        return HTTPChannel(self, principal, stateful=False)


class HTTPChannel:
    """One upstream session (or the stateless modern channel) for one principal."""

    def __init__(self, upstream: HTTPUpstream, principal: Principal, *, stateful: bool) -> None:
        self._upstream = upstream
        self.principal = principal
        self.stateful = stateful
        self.session_id: str | None = None
        """The upstream's ``Mcp-Session-Id``, learnt from its answer to ``initialize``."""

    def _headers(
        self, static: tuple[tuple[bytes, bytes], ...], forwarded: Mapping[str, str]
    ) -> list[tuple[bytes, bytes]]:
        headers = list(static)
        for name, value in forwarded.items():
            headers.append((name.encode("latin-1"), value.encode("latin-1")))
        if self.session_id is not None:
            headers.append((b"mcp-session-id", self.session_id.encode("latin-1")))
        return headers

    async def _request(
        self, method: str, headers: list[tuple[bytes, bytes]], body: bytes, deadline: float
    ) -> H1Response:
        up = self._upstream
        try:
            return await up.http.request(method, up.target, headers, body, deadline=deadline)
        except TimeoutError as exc:
            raise UpstreamTimeout(f"{up.name}: {method} timed out") from exc
        except ProtocolError as exc:
            # It answered, but not in HTTP: the upstream is reachable and broken.
            raise UpstreamError(f"{up.name}: {exc}", reason="upstream_bad_reply") from exc
        except H1Error as exc:
            raise UpstreamError(f"{up.name}: {type(exc).__name__}: {exc}", reason="upstream_unreachable") from exc

    async def _credential(self) -> list[tuple[bytes, bytes]]:
        return await self._upstream.auth.headers(self.principal)

    async def send(self, message: Message, data: bytes, headers: Mapping[str, str]) -> Reply:
        deadline = self._upstream.deadline()
        request_headers = self._headers(_POST_HEADERS, headers) + await self._credential()
        response = await self._request("POST", request_headers, data, deadline)
        if self.stateful and message.method == "initialize" and response.status < 300:
            self.session_id = response.headers.get("mcp-session-id")
        return await self._reply(response, message)

    async def listen(self, headers: Mapping[str, str]) -> Reply:
        up = self._upstream
        if self.session_id is None:
            raise MethodNotAllowed("no upstream session to listen on", reason="no_upstream_session")
        request_headers = self._headers(_GET_HEADERS, headers) + await self._credential()
        response = await self._request("GET", request_headers, b"", up.deadline())
        if response.status == 405:
            response.release()
            raise MethodNotAllowed(f"{up.name} offers no GET stream", reason="upstream_no_get_stream")
        return await self._reply(response, None)

    async def aclose(self) -> None:
        if not self.stateful or self.session_id is None:
            return
        up = self._upstream
        session_id, self.session_id = self.session_id, None
        try:
            headers = [(b"mcp-session-id", session_id.encode("latin-1")), *await self._credential()]
            response = await up.http.request("DELETE", up.target, headers, b"", deadline=up.deadline())
        except (H1Error, BastionError, TimeoutError):
            # The upstream session will expire on its own (also when the user's credential is gone now);
            # nothing the client can do about it.
            return
        try:
            await response.read(up.max_message_bytes)
        except (H1Error, TimeoutError):
            return
        finally:
            response.release()

    async def _reply(self, response: H1Response, sent: Message | None) -> Reply:
        up = self._upstream
        status = response.status
        ctype = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        headers = {"mcp-session-id": v} if (v := response.headers.get("mcp-session-id")) else {}
        if status == 202:
            response.release()
            return Reply("accepted", no_events(), status=202, headers=headers)
        if status == 404 and self.session_id is not None:
            response.release()
            raise SessionRejected(f"{up.name} no longer knows its session", reason="upstream_session_expired")
        if ctype == "text/event-stream" and status == 200:
            return Reply("sse", _SSEEvents(self._stream(response), response), status=status, headers=headers)
        if ctype == "application/json":
            body = await self._read_limited(response)
            message = _parse_upstream(up.name, body, up.max_json_depth)
            # A JSON-RPC error body with a 4xx status is the upstream speaking MCP: pass it on.
            return Reply("json", one_event(Event(body, message)), status=200, headers=headers)
        response.release()
        reason = "upstream_http_error" if status >= 400 else "upstream_bad_reply"
        raise UpstreamError(f"{up.name}: HTTP {status} {ctype or 'no content type'}", reason=reason)

    async def _read_limited(self, response: H1Response) -> bytes:
        up = self._upstream
        limit = up.max_message_bytes
        try:
            return await response.read(limit)
        except BodyTooLarge as exc:
            raise UpstreamError(f"{up.name}: reply over {limit} bytes", reason="upstream_reply_too_large") from exc
        except TimeoutError as exc:
            raise UpstreamTimeout(f"{up.name}: reply timed out") from exc
        except H1Error as exc:
            raise UpstreamError(f"{up.name}: reply broken: {exc}", reason="upstream_disconnected") from exc
        finally:
            response.release()

    async def _stream(self, response: H1Response) -> AsyncGenerator[Event]:
        up = self._upstream
        parser = SSEParser(up.max_message_bytes)
        finished = False
        try:
            async for chunk in response.chunks():
                for sse in parser.feed(chunk):
                    if sse.event != "message":
                        continue
                    message = _parse_upstream(up.name, sse.data, up.max_json_depth) if sse.data else None
                    event = Event(sse.data, message, sse.event_id, sse.retry_ms)
                    if message is not None and message.kind == "response":
                        # The answer ends the exchange. Finish the stream first so the connection goes
                        # back to the pool instead of being torn down (a new TCP connection per call).
                        finished = await _finish_body(response)
                        yield event
                        return
                    yield event
            finished = True
        except TimeoutError as exc:
            raise UpstreamTimeout(f"{up.name}: stream timed out") from exc
        except H1Error as exc:
            raise UpstreamError(f"{up.name}: stream broken: {exc}", reason="upstream_disconnected") from exc
        finally:
            if finished:
                response.release()
            else:
                # Closing (not releasing) tells the upstream we stopped listening: that is how a client's
                # disconnect cancels a modern-era request upstream.
                response.close()


class _SSEEvents:
    """The events of an SSE reply; ``aclose`` closes the response even if iteration never started.

    (A generator that never ran has no ``finally`` to run: without this, a reply dropped before its first
    event would hold its connection until the request deadline.)
    """

    __slots__ = ("_events", "_response")

    def __init__(self, events: AsyncGenerator[Event], response: H1Response) -> None:
        self._events = events
        self._response = response

    def __aiter__(self) -> _SSEEvents:
        return self

    async def __anext__(self) -> Event:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        try:
            await self._events.aclose()
        finally:
            self._response.close()  # a no-op once the generator released or closed it


FINISH_GRACE_SECONDS = 0.05
"""How long an upstream may take to end an SSE stream after its answer before we drop the connection."""
FINISH_MAX_BYTES = 65_536


async def _finish_body(response: H1Response) -> bool:
    """Read what is left of a response after its final message; True when it ended cleanly and in time."""
    if response.complete:
        # The usual case: the stream's end came with the answer. No timer needed.
        return True
    seen = 0
    try:
        async with asyncio.timeout(FINISH_GRACE_SECONDS):
            async for chunk in response.chunks():
                seen += len(chunk)
                if seen > FINISH_MAX_BYTES:
                    return False
    except (TimeoutError, H1Error):
        return False
    return True


def _parse_upstream(name: str, data: bytes, max_depth: int) -> Message:
    """Parse one upstream message; a malformed one is the upstream's fault, not the client's."""
    try:
        return parse_message(data, max_depth=max_depth)
    except MalformedRequest as exc:
        raise UpstreamError(f"{name}: invalid JSON-RPC message: {exc.detail}", reason="upstream_bad_reply") from exc
