"""Local MCP servers over stdio (MCP 2025-11-25 §Transports "stdio": newline-delimited JSON-RPC on the pipes).

The gateway runs the server as child processes (supervised by ``upstream.process``), each behind a ``Link``
(``upstream.link``: id and progress-token mapping, routing of child messages, cancellation); this module
decides which child serves a channel.

- Handshake era (``open_session``): one child per gateway session. A stdio server has exactly one session,
  so sharing a child would share a session between users. The client's ``initialize`` (once answered) and
  ``notifications/initialized`` are remembered and replayed into a restarted child: a crash costs the
  in-flight requests (``upstream_crashed``), not the session.
- Modern era (``stateless``): one child per principal, shared by that principal's concurrent requests and
  stopped after ``idle_seconds`` unused. No ``initialize``: every 2026-07-28 request carries its own
  ``_meta`` envelope (the SDK's stdio server serves the modern era when the first request carries one).
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

from mcp_bastion.errors import ConfigError, MethodNotAllowed, UpstreamError
from mcp_bastion.exchange import Principal
from mcp_bastion.jsonrpc.message import Message
from mcp_bastion.upstream.base import Channel, Reply
from mcp_bastion.upstream.link import Link
from mcp_bastion.upstream.process import child_environment

if TYPE_CHECKING:
    from mcp_bastion.sandbox.launch import Sandbox

DEFAULT_BACKOFF: Final = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
"""Seconds before each restart of a crashed child; a crash after the last step breaks the channel."""


class StdioUpstream:
    """A local MCP server run as child processes: one per gateway session, one per principal (modern era)."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path | None,
        max_message_bytes: int,
        max_json_depth: int,
        request_timeout: float,
        restart_backoff: Sequence[float] = DEFAULT_BACKOFF,
        idle_seconds: float = 600,
        sandbox: Sandbox | None = None,
    ) -> None:
        if not command:
            raise ConfigError(f"upstream {name}: the command is empty")
        self.name = name
        self.command = tuple(command)
        self.env = dict(env)
        self.cwd = cwd
        self.max_message_bytes = max_message_bytes
        self.max_json_depth = max_json_depth
        self.request_timeout = request_timeout
        self.restart_backoff = tuple(restart_backoff)
        self.idle_seconds = idle_seconds
        self.sandbox = sandbox
        """Strict profile: each child runs in it, and is killed when a request outlives ``request_timeout``."""
        self._sessions: set[Link] = set()
        self._principals: dict[str, Link] = {}
        self._reaping: set[asyncio.Task[None]] = set()
        self._closed = False

    async def start(self) -> None:
        """Fail at startup, naming the command, when the program cannot be found (as the child would find it)."""
        program = self.command[0]
        if os.sep in program:
            found = (self.cwd or Path.cwd()) / program
            usable = os.access(found, os.X_OK) and found.is_file()
        else:
            usable = shutil.which(program, path=child_environment(self.env)["PATH"]) is not None
        if not usable:
            raise ConfigError(f"upstream {self.name}: command {program!r} not found or not executable")
        if self.sandbox is not None:
            # Fail closed now, naming what is missing, rather than at the first request.
            await self.sandbox.check()
            self.sandbox.plan(self.command, child_environment(self.env), self.cwd)

    async def aclose(self) -> None:
        self._closed = True
        links = [*self._sessions, *self._principals.values()]
        self._sessions.clear()
        self._principals.clear()
        await asyncio.gather(*(link.aclose() for link in links), *self._reaping)
        if self.sandbox is not None:
            await self.sandbox.aclose()

    async def open_session(self, principal: Principal) -> Channel:
        self._check_open()
        link = Link(self, replay=True, on_idle=None)
        self._sessions.add(link)
        return StdioSessionChannel(self, link)

    async def stateless(self, principal: Principal) -> Channel:
        self._check_open()
        return StdioPrincipalChannel(self, principal.key)

    def principal_link(self, key: str) -> Link:
        """The principal's child; a fresh one after an idle reap, or after a crash loop broke the last one
        (the modern era has no session to lose, so a new request deserves a new attempt)."""
        self._check_open()
        link = self._principals.get(key)
        if link is None or link.broken:
            if link is not None:
                self._reap(key, link)
            link = self._principals[key] = Link(self, replay=False, on_idle=functools.partial(self._reap, key))
        return link

    async def release_session(self, link: Link) -> None:
        self._sessions.discard(link)
        await link.aclose()

    def _reap(self, key: str, link: Link) -> None:
        if self._principals.get(key) is link:
            del self._principals[key]
        task = asyncio.get_running_loop().create_task(link.aclose())
        self._reaping.add(task)
        task.add_done_callback(self._reaping.discard)

    def _check_open(self) -> None:
        if self._closed:
            raise UpstreamError(f"upstream {self.name} is closed", reason="upstream_closed")


class StdioSessionChannel:
    """A handshake-era session: its own child, replayed after a crash, stopped when the session ends."""

    def __init__(self, upstream: StdioUpstream, link: Link) -> None:
        self._upstream = upstream
        self._link = link

    async def send(self, message: Message, data: bytes, headers: Mapping[str, str]) -> Reply:
        # ``data`` is not forwarded as is: ids are rewritten, and a client's pretty-printed JSON may hold
        # newlines, which would split the message on the stdio wire.
        return await self._link.send(message)

    async def listen(self, headers: Mapping[str, str]) -> Reply:
        return self._link.listen()

    async def aclose(self) -> None:
        await self._upstream.release_session(self._link)


class StdioPrincipalChannel:
    """The modern-era channel of one principal: requests go to that principal's shared child."""

    def __init__(self, upstream: StdioUpstream, key: str) -> None:
        self._upstream = upstream
        self._key = key

    async def send(self, message: Message, data: bytes, headers: Mapping[str, str]) -> Reply:
        return await self._upstream.principal_link(self._key).send(message)

    async def listen(self, headers: Mapping[str, str]) -> Reply:
        raise MethodNotAllowed("the modern era has no server-to-client stream", reason="upstream_no_get_stream")

    async def aclose(self) -> None:
        return  # the child is the principal's, not this channel's: it lives until idle or upstream close
