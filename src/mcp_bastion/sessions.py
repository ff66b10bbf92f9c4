"""Gateway sessions (handshake era): the ``Mcp-Session-Id`` the gateway issues, bound to one principal.

A session id is 256 bits from ``secrets`` and is only ever looked up together with the caller's principal
key: the same id presented with another identity is refused exactly like an unknown id (404), so an id
leaked to someone else is useless to them and its existence is not revealed. Each session owns one
upstream channel; ending the session ends that channel.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from mcp_bastion.errors import RateLimited, SessionRejected
from mcp_bastion.exchange import Principal
from mcp_bastion.upstream.base import Channel


@dataclass(slots=True)
class Session:
    id: str
    principal_key: str
    endpoint: str
    channel: Channel
    created: float
    last_seen: float
    protocol_version: str | None = None


class SessionStore:
    """In-process session table (one replica). Sessions idle longer than ``idle_seconds`` are reaped."""

    def __init__(
        self, *, max_per_principal: int, idle_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._sessions: dict[str, Session] = {}
        self._max = max_per_principal
        self._idle = idle_seconds
        self._clock = clock

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, principal: Principal, endpoint: str, channel: Channel) -> Session:
        owned = sum(1 for s in self._sessions.values() if s.principal_key == principal.key)
        if owned >= self._max:
            raise RateLimited(f"{principal.key} holds {owned} sessions", reason="too_many_sessions", retry_after=60)
        now = self._clock()
        session = Session(secrets.token_urlsafe(32), principal.key, endpoint, channel, now, now)
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str, principal: Principal, endpoint: str) -> Session:
        session = self._sessions.get(session_id)
        if session is None:
            raise SessionRejected("unknown session id", reason="session_unknown")
        if not secrets.compare_digest(session.principal_key, principal.key):
            raise SessionRejected("session belongs to another principal", reason="session_foreign")
        if session.endpoint != endpoint:
            raise SessionRejected("session belongs to another endpoint", reason="session_foreign")
        now = self._clock()
        if now - session.last_seen > self._idle:
            raise SessionRejected("session expired", reason="session_expired")
        session.last_seen = now
        return session

    def pop(self, session_id: str) -> Session | None:
        return self._sessions.pop(session_id, None)

    def expired(self) -> list[Session]:
        """Remove and return the sessions idle past their limit (the caller closes their channels)."""
        now = self._clock()
        gone = [s for s in self._sessions.values() if now - s.last_seen > self._idle]
        for session in gone:
            del self._sessions[session.id]
        return gone

    def drain(self) -> list[Session]:
        gone = list(self._sessions.values())
        self._sessions.clear()
        return gone
