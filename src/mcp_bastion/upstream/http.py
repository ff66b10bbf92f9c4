"""Remote MCP servers over Streamable HTTP (MCP 2025-06-18 §Transports, and the 2026-07-28 single POST).

One pooled, kept-alive aiohttp session per upstream for the process lifetime (building a client or an SSL
context per request costs ~25 ms; see STACK.md). TCP connections carry no identity; what identifies the
user to the upstream travels per request, and each handshake-era gateway session maps to exactly one
upstream session (``Mcp-Session-Id``), so no upstream session is ever shared between principals.

Foreign errors (aiohttp, asyncio timeouts) are translated here into ``UpstreamError``/``UpstreamTimeout``.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Mapping

import aiohttp

from mcp_bastion.errors import (
    MalformedRequest,
    MethodNotAllowed,
    SessionRejected,
    UpstreamError,
    UpstreamTimeout,
)
from mcp_bastion.exchange import Principal
from mcp_bastion.jsonrpc.message import Message, parse_message
from mcp_bastion.upstream.base import Channel, Event, Reply, no_events, one_event
from mcp_bastion.upstream.sse import SSEParser

ACCEPT = "application/json, text/event-stream"
_CHUNK = 65_536


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
    ) -> None:
        self.name = name
        self.url = url
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else False
        self._timeout = aiohttp.ClientTimeout(total=request_timeout, connect=connect_timeout)
        self.max_message_bytes = max_message_bytes
        self.max_json_depth = max_json_depth
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=256, keepalive_timeout=60, ssl=self._ssl)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            auto_decompress=False,
            # Cookies would let one user's upstream state leak into another's requests on the shared pool.
            cookie_jar=aiohttp.DummyCookieJar(),
            # No Accept-Encoding: replies are parsed as they arrive, never decompressed.
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise UpstreamError(f"upstream {self.name} is not started", reason="upstream_not_started")
        return self._session

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

    def _headers(self, forwarded: Mapping[str, str]) -> dict[str, str]:
        headers = {"accept": ACCEPT, "content-type": "application/json", **forwarded}
        if self.session_id is not None:
            headers["mcp-session-id"] = self.session_id
        return headers

    async def send(self, message: Message, data: bytes, headers: Mapping[str, str]) -> Reply:
        up = self._upstream
        try:
            response = await up.http.post(up.url, data=data, headers=self._headers(headers))
        except TimeoutError as exc:
            raise UpstreamTimeout(f"{up.name}: connect timed out") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"{up.name}: {type(exc).__name__}: {exc}", reason="upstream_unreachable") from exc
        if self.stateful and message.method == "initialize" and response.status < 300:
            self.session_id = response.headers.get("mcp-session-id")
        return await self._reply(response, message)

    async def listen(self, headers: Mapping[str, str]) -> Reply:
        up = self._upstream
        if self.session_id is None:
            raise MethodNotAllowed("no upstream session to listen on", reason="no_upstream_session")
        request_headers = self._headers(headers)
        request_headers["accept"] = "text/event-stream"
        del request_headers["content-type"]
        try:
            response = await up.http.get(up.url, headers=request_headers)
        except TimeoutError as exc:
            raise UpstreamTimeout(f"{up.name}: GET stream timed out") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"{up.name}: {type(exc).__name__}: {exc}", reason="upstream_unreachable") from exc
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
            async with up.http.delete(up.url, headers={"mcp-session-id": session_id}) as response:
                await response.read()
        except (aiohttp.ClientError, TimeoutError):
            # The upstream session will expire on its own; nothing the client can do about it.
            return

    async def _reply(self, response: aiohttp.ClientResponse, sent: Message | None) -> Reply:
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
            return Reply("sse", self._stream(response), status=status, headers=headers)
        if ctype == "application/json":
            body = await self._read_limited(response)
            message = _parse_upstream(up.name, body, up.max_json_depth)
            # A JSON-RPC error body with a 4xx status is the upstream speaking MCP: pass it on.
            return Reply("json", one_event(Event(body, message)), status=200, headers=headers)
        response.release()
        reason = "upstream_http_error" if status >= 400 else "upstream_bad_reply"
        raise UpstreamError(f"{up.name}: HTTP {status} {ctype or 'no content type'}", reason=reason)

    async def _read_limited(self, response: aiohttp.ClientResponse) -> bytes:
        limit = self._upstream.max_message_bytes
        try:
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.content.iter_chunked(_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise UpstreamError(
                        f"{self._upstream.name}: reply over {limit} bytes", reason="upstream_reply_too_large"
                    )
                chunks.append(chunk)
            return b"".join(chunks)
        except TimeoutError as exc:
            raise UpstreamTimeout(f"{self._upstream.name}: reply timed out") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"{self._upstream.name}: reply broken: {exc}", reason="upstream_disconnected") from exc
        finally:
            response.release()

    async def _stream(self, response: aiohttp.ClientResponse) -> AsyncIterator[Event]:
        up = self._upstream
        parser = SSEParser(up.max_message_bytes)
        finished = False
        try:
            async for chunk in response.content.iter_any():
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
        except (aiohttp.ClientError, asyncio.IncompleteReadError) as exc:
            raise UpstreamError(f"{up.name}: stream broken: {exc}", reason="upstream_disconnected") from exc
        finally:
            if finished:
                response.release()
            else:
                # Closing (not releasing) tells the upstream we stopped listening: that is how a client's
                # disconnect cancels a modern-era request upstream.
                response.close()


FINISH_GRACE_SECONDS = 0.05
"""How long an upstream may take to end an SSE stream after its answer before we drop the connection."""
FINISH_MAX_BYTES = 65_536


async def _finish_body(response: aiohttp.ClientResponse) -> bool:
    """Read what is left of a response after its final message; True when it ended cleanly and in time."""
    seen = 0
    try:
        async with asyncio.timeout(FINISH_GRACE_SECONDS):
            while chunk := await response.content.readany():
                seen += len(chunk)
                if seen > FINISH_MAX_BYTES:
                    return False
    except (TimeoutError, aiohttp.ClientError):
        return False
    return True


def _parse_upstream(name: str, data: bytes, max_depth: int) -> Message:
    """Parse one upstream message; a malformed one is the upstream's fault, not the client's."""
    try:
        return parse_message(data, max_depth=max_depth)
    except MalformedRequest as exc:
        raise UpstreamError(f"{name}: invalid JSON-RPC message: {exc.detail}", reason="upstream_bad_reply") from exc
