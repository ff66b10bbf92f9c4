"""Login rate limiting: the seam the login form uses, and a small in-memory implementation.

The real limiter (token buckets, shared through the database or Redis across replicas) lives in
``identity/ratelimit.py``; the pages only ask it three things. ``check`` is called before the password is
verified, so a locked-out guesser costs no argon2 work.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol


class LoginLimiter(Protocol):
    """Decides whether a login attempt for ``username`` from ``address`` may go ahead."""

    async def check(self, username: str, address: str) -> float:
        """Seconds the caller must wait before trying again; ``0`` (or less) to go ahead."""
        ...

    async def failed(self, username: str, address: str) -> None:
        """A wrong username or password was given."""
        ...

    async def succeeded(self, username: str, address: str) -> None:
        """The user logged in."""
        ...


class MemoryLoginLimiter:
    """Per-process lockout: after ``max_failures`` failures for a username or an address within ``window``
    seconds, refuse that key until the window has passed since its first failure.

    Memory is bounded (``max_keys``, oldest forgotten first) because usernames are attacker-chosen.
    Suitable for tests and a single process; several replicas need the shared limiter. Behind a reverse
    proxy the address must be the client's (uvicorn ``proxy_headers`` / ``forwarded_allow_ips``), or every
    login shares the proxy's address and a few failures lock everyone out.
    """

    def __init__(
        self,
        *,
        max_failures: int = 5,
        window: float = 300.0,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.max_keys = max_keys
        self.clock = clock
        self._failures: OrderedDict[tuple[str, str], tuple[float, int]] = OrderedDict()
        """(kind, key) -> (first failure, count), in insertion order of the window's start."""

    @staticmethod
    def _keys(username: str, address: str) -> tuple[tuple[str, str], ...]:
        return (("user", username), ("address", address))

    async def check(self, username: str, address: str) -> float:
        now = self.clock()
        wait = 0.0
        for key in self._keys(username, address):
            entry = self._failures.get(key)
            if entry is None:
                continue
            started, count = entry
            remaining = started + self.window - now
            if remaining <= 0:
                del self._failures[key]
            elif count >= self.max_failures:
                wait = max(wait, remaining)
        return wait

    async def failed(self, username: str, address: str) -> None:
        now = self.clock()
        for key in self._keys(username, address):
            started, count = self._failures.get(key, (now, 0))
            if started + self.window <= now:
                started, count = now, 0
                self._failures.pop(key, None)
            self._failures[key] = (started, count + 1)
        while len(self._failures) > self.max_keys:
            self._failures.popitem(last=False)

    async def succeeded(self, username: str, address: str) -> None:
        # Only the user's own counter is forgiven: a success must not reset a guessing address.
        self._failures.pop(("user", username), None)
