"""The egress proxy of one sandboxed server: an HTTP proxy on a Unix socket that lets the server reach only
the ``host:port`` pairs its profile names, and audits every decision.

The sandbox's network namespace has only loopback; ``forwarder`` relays 127.0.0.1:3128 inside it to this
socket, bound into the sandbox, so the proxy is the only way out. It speaks the two forms proxy clients
use (RFC 9110 §9.3.6, RFC 9112 §3.2.2): ``CONNECT host:port`` for TLS tunnels, and plain HTTP requests in
absolute form (``GET http://host/path``), forwarded one request per connection.

Invariants:
- the allow-list is checked on the name the client sent, before any DNS lookup: a name that is not
  listed is never resolved, so DNS itself cannot carry data out;
- names are resolved here, through ``netguard.check_host``, and the connection goes to an address it
  vetted, never to a second lookup (DNS rebinding); loopback, private, link-local, CGNAT and metadata
  addresses are refused unless ``allowed_networks`` (or ``allow_private``) opens them;
- IP literals pass only when listed literally, in ``netguard``'s canonical form (``2130706433``,
  ``127.1`` and ``[::ffff:127.0.0.1]`` are not ``127.0.0.1``);
- a plain HTTP request reaches the origin with the client's Host (which must agree with the URL), without
  ``Proxy-Authorization`` or hop-by-hop fields, framed by the proxy; a connection is one request: bytes
  after its body (a pipelined or smuggled second request) are never forwarded nor answered, the first
  request goes out whole, and its audit record's detail says ``pipelining_not_supported``;
- every connection that sent a byte ends in exactly one audit record (refusals as soon as decided,
  tunnels when they close, with bytes up and down), also written to the operator log;
- heads, connection count, the time to send a head, to connect and to stay idle are all bounded.

This module is the server: it accepts a connection, reads the head, has it decided, resolves and connects,
and emits the audit record. What may go out is ``egressrules`` (the allow-list, the limits); what one
request asks and whether it may go out is ``egressrequest`` (the head parser, the decision, the origin's
head), which touches no socket; moving the bytes of an allowed connection is ``egressrelay``.

Refusals are answered ``403`` (or ``400``/``408``/``431``/``502``/``503``/``504``) with a short reason in
the body and an RFC 9209 ``Proxy-Status`` field. They are ``egressrequest.Refused``: the proxy renders
them itself, as a proxy must; they never reach the gate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import socket
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import httptools

from mcp_bastion.audit.record import egress_record
from mcp_bastion.errors import ConfigError
from mcp_bastion.netguard import RESOLVE_TIMEOUT, Address, Policy, SSRFBlocked, check_host, networks
from mcp_bastion.sandbox.egressrelay import READ_SIZE, Relay, Streams
from mcp_bastion.sandbox.egressrequest import Refused, Request, decide, refusal_response
from mcp_bastion.sandbox.egressrules import AllowList, EgressLimits

if TYPE_CHECKING:
    from mcp_bastion.jsonrpc.message import JSONObject

__all__ = ["AllowList", "EgressLimits", "EgressProxy"]

logger = logging.getLogger(__name__)

_DEFAULT_LIMITS: Final = EgressLimits()
"""Frozen, so one shared default is safe."""
_SOCKET_PATH_MAX: Final = 107
"""``sun_path`` holds 108 bytes with the terminating NUL."""
_PIPELINED: Final = "pipelining_not_supported: what followed the first request was not forwarded"
"""The audit detail of a plain request that something followed on its connection."""


async def _connect(loop: asyncio.AbstractEventLoop, sock: socket.socket, sockaddr: tuple[str, int]) -> None:
    """``connect()`` a non-blocking socket to a numeric address. Not ``loop.sock_connect``: uvloop's asks
    ``loop.getaddrinfo`` about the address first, and this module resolves each name exactly once."""
    try:
        sock.connect(sockaddr)
        return
    except BlockingIOError:
        pass
    writable: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not writable.done():
            writable.set_result(None)

    loop.add_writer(sock.fileno(), ready)
    try:
        await writable
    finally:
        loop.remove_writer(sock.fileno())
    error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if error:
        raise OSError(error, os.strerror(error))


LINGER: Final = 1.0
"""Seconds a refusal waits for the client to stop sending (up to ``READ_SIZE`` bytes more) before closing."""


async def _answer_and_linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, answer: bytes) -> None:
    """Send ``answer`` and end our side, then read what the client still sends for a moment: closing a
    socket with unread input resets the connection, and the client would lose the answer."""
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(LINGER):
            writer.write(answer)
            if writer.can_write_eof():
                writer.write_eof()
            await writer.drain()
            received = 0
            while received < READ_SIZE and (data := await reader.read(READ_SIZE)):
                received += len(data)


@dataclass(slots=True)
class _Flow:
    """What the audit record of one connection says; filled in as the connection goes."""

    started: float = field(default_factory=time.monotonic)
    received: int = 0
    method: str | None = None
    host: str | None = None
    port: int | None = None
    address: str | None = None
    decision: Literal["allow", "deny", "error"] = "deny"
    reason: str = "closed_before_request"
    status: int | None = None
    end: str | None = None
    bytes_up: int = 0
    bytes_down: int = 0
    detail: str = ""
    last: float = 0.0
    """Loop time of the last byte moved, for the idle timeout."""


class EgressProxy:
    """The egress proxy of the sandboxed server ``name``; runs in the gateway's event loop."""

    def __init__(
        self,
        name: str,
        allow: Sequence[str],
        audit: Callable[[JSONObject], None] | None,
        state_dir: Path,
        *,
        allowed_networks: Sequence[str] = (),
        allow_private: bool = False,
        limits: EgressLimits = _DEFAULT_LIMITS,
    ) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}", name):
            raise ConfigError(f"sandbox egress proxy name {name!r}: letters, digits, '_', '.', '-' only")
        self.name: Final = name
        self.allow: Final = AllowList.parse(allow)
        try:
            allowed = networks(allowed_networks)
        except ValueError as exc:
            raise ConfigError(f"sandbox egress allowed_networks {list(allowed_networks)!r}: {exc}") from exc
        self.policy: Final = Policy(allow_private=allow_private, allowed_networks=allowed)
        self.limits: Final = limits
        self._audit = audit
        self._path = state_dir / "egress" / f"{name}.sock"
        if len(os.fsencode(self._path)) > _SOCKET_PATH_MAX:
            raise ConfigError(f"sandbox egress socket path too long for a Unix socket: {self._path}")
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def socket_path(self) -> Path:
        return self._path

    async def start(self) -> None:
        """Listen on ``socket_path()`` (mode 0600, in a 0700 directory; a stale socket is replaced)."""
        if self._server is not None:
            raise RuntimeError("egress proxy already started")
        directory = self._path.parent
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if directory.is_symlink() or not directory.is_dir():
            raise ConfigError(f"sandbox egress directory is not a directory: {directory}")
        directory.chmod(0o700)
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISSOCK(self._path.lstat().st_mode):
                raise ConfigError(f"sandbox egress socket path exists and is not a socket: {self._path}")
            self._path.unlink()
        self._server = await asyncio.start_unix_server(self._connection, path=self._path)
        self._path.chmod(0o600)
        logger.info("egress proxy %s listening on %s", self.name, self._path)

    async def aclose(self) -> None:
        """Stop listening, end every open tunnel (audited as ``proxy_closed``) and remove the socket."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:  # always, inside the server's task
            self._tasks.add(task)
        flow = _Flow(last=asyncio.get_running_loop().time())
        try:
            await self._serve(reader, writer, flow)
        except Refused as refused:
            flow.decision = "deny" if refused.status < 500 else "error"
            flow.reason, flow.status, flow.detail = refused.reason, refused.status, refused.detail
            flow.address = flow.address if refused.address is None else str(refused.address)
            await _answer_and_linger(reader, writer, refusal_response(refused))
        except asyncio.CancelledError:  # aclose(): this task is the connection's own top level, nothing awaits it
            flow.end = "proxy_closed"
        except OSError as exc:  # the client went away before a decision
            flow.end, flow.detail = "client_error", repr(exc)
        except Exception as exc:  # the connection's top level: fail closed, audit it, keep serving the others
            logger.exception("egress proxy %s: internal error", self.name)
            flow.decision, flow.reason, flow.detail = "error", "internal_error", repr(exc)
        finally:
            writer.close()
            if task is not None:
                self._tasks.discard(task)
            if flow.received:
                self._emit(flow)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, flow: _Flow) -> None:
        """Read one request, decide, and carry it out; ``Refused`` when refused."""
        if len(self._tasks) > self.limits.max_connections:
            flow.received = 1  # audit it even though nothing will be read
            raise Refused(503, "too_many_connections")
        head = await self._read_head(reader, flow)
        if head is None:
            return  # a port probe: nothing asked, nothing to audit
        request, early = head
        flow.method = request.method
        plan = decide(request, early, self.allow, flow)
        origin = await self._open(flow, plan.host, plan.port)
        try:
            flow.decision, flow.reason = "allow", "ok"
            relay = Relay((reader, writer), origin, flow, idle_timeout=self.limits.idle_timeout)
            flow.end = await relay.carry(plan, request)
            if request.pipelined:
                flow.detail = _PIPELINED
        finally:
            origin[1].close()

    async def _read_head(self, reader: asyncio.StreamReader, flow: _Flow) -> tuple[Request, bytes | None] | None:
        """The request up to its head, and the bytes after a CONNECT or upgrade head (None: not one); None
        when the client closed without sending anything."""
        request = Request(self.limits)
        early: bytes | None = None
        try:
            async with asyncio.timeout(self.limits.head_timeout):
                while not request.head_done and not request.too_large:
                    data = await reader.read(READ_SIZE)
                    if not data:
                        if flow.received:
                            raise Refused(400, "bad_request", "connection closed inside the request head")
                        return None
                    flow.received += len(data)
                    try:
                        early = request.feed(data)
                    except httptools.HttpParserError as exc:
                        raise Refused(400, "bad_request", str(exc)) from exc
        except TimeoutError as exc:
            flow.received = max(flow.received, 1)
            raise Refused(408, "head_timeout") from exc
        if request.too_large:
            raise Refused(431, "headers_too_large")
        return request, early

    async def _open(self, flow: _Flow, host: Address | str, port: int) -> Streams:
        """Resolve and vet ``host``, then connect to a vetted address (never resolving again)."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.limits.connect_timeout):
                try:
                    vetted = await check_host(
                        str(host), port, self.policy, lookup_timeout=min(RESOLVE_TIMEOUT, self.limits.connect_timeout)
                    )
                except SSRFBlocked as exc:
                    raise Refused(403, f"address_{exc.reason}", str(exc), address=exc.address) from exc
                except TimeoutError:
                    raise
                except OSError as exc:
                    raise Refused(502, "resolve_failed", repr(exc)) from exc
                if not vetted:  # check_host raises instead; should that change, still say what went wrong
                    raise Refused(502, "resolve_failed", f"{str(host)!r} resolved to no address")
                failure: OSError | None = None
                for item in vetted:
                    flow.address = str(item.address)
                    sock = socket.socket(item.family, socket.SOCK_STREAM)
                    sock.setblocking(False)
                    try:
                        await _connect(loop, sock, (str(item.address), port))
                        return await asyncio.open_connection(sock=sock, limit=READ_SIZE)
                    except OSError as exc:
                        sock.close()
                        failure = exc
                    except BaseException:
                        sock.close()
                        raise
        except TimeoutError as exc:
            raise Refused(504, "connect_timeout") from exc
        raise Refused(502, "connect_failed", repr(failure))

    def _emit(self, flow: _Flow) -> None:
        record = egress_record(
            self.name,
            request_id=secrets.token_hex(8),
            method=flow.method,
            host=flow.host,
            port=flow.port,
            address=flow.address,
            decision=flow.decision,
            reason=flow.reason,
            status=flow.status,
            end=flow.end,
            bytes_up=flow.bytes_up,
            bytes_down=flow.bytes_down,
            latency_ms=(time.monotonic() - flow.started) * 1000,
            detail=flow.detail,
        )
        logger.log(
            logging.INFO if flow.decision == "allow" else logging.WARNING,
            "egress %s %s %s:%s -> %s: %s %s (%s) up=%d down=%d",
            self.name,
            flow.method,
            flow.host,
            flow.port,
            flow.address,
            flow.decision,
            flow.reason,
            flow.end,
            flow.bytes_up,
            flow.bytes_down,
        )
        if self._audit is not None:
            try:
                self._audit(record)
            except Exception:  # a failing sink must not take the proxy down; the operator log has the record
                logger.exception("egress proxy %s: audit sink failed", self.name)
