"""Login rate limiting: a token bucket per username and per client address, and a lockout that grows with
consecutive failures. Pure and in-process; the clock is injected.

Why both keys: the username bucket stops guessing one account's password from many addresses; the address
bucket stops one address spraying many usernames. Each verification costs ~180 ms of argon2id CPU, so
the limiter also protects the machine: ``check`` runs *before* the password is verified.

Use::

    wait = limiter.check(username, address)
    if wait: refuse with 429, Retry-After = ceil(wait)   # nothing was verified
    try: user = await directory.authenticate(username, password)
    except OAuthError: limiter.failure(username, address); raise
    limiter.success(username, address)

Invariants:
- an attempt is counted when ``check`` allows it, so refused attempts cost nothing and earn nothing;
- after ``lockout_after`` consecutive failures a key is locked for ``lockout_seconds``, doubling with each
  further failure up to ``max_lockout_seconds``; a success clears the username's streak (not the
  address's: one valid account must not launder a spraying address), and a streak is forgotten after
  ``max_lockout_seconds`` without failures;
- memory is bounded: each table keeps the ``max_tracked`` most recently seen keys.

Trade-off, stated: anyone can lock a username for a while by failing on purpose. The lockout is capped
and short, and the alternative (no lockout) lets a botnet guess at 5 passwords a minute forever.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """The budget of one kind of key (username or address)."""

    attempts: int
    """Attempts allowed per ``window_seconds`` (the bucket's size: also the largest burst)."""
    window_seconds: float
    lockout_after: int
    """Consecutive failures before the first lockout."""
    lockout_seconds: float
    max_lockout_seconds: float


@dataclass(frozen=True, slots=True)
class LoginLimits:
    username: KeyLimits = KeyLimits(5, 60.0, lockout_after=5, lockout_seconds=30.0, max_lockout_seconds=900.0)
    address: KeyLimits = KeyLimits(20, 60.0, lockout_after=20, lockout_seconds=30.0, max_lockout_seconds=900.0)
    max_tracked: int = 10_000
    """Keys remembered per table; the least recently seen go first."""


DEFAULT_LIMITS: Final = LoginLimits()


@dataclass(slots=True)
class _State:
    tokens: float
    updated: float
    failures: int = 0
    last_failure: float = 0.0
    locked_until: float = 0.0


class _Table:
    """Buckets and failure streaks for one kind of key."""

    def __init__(self, limits: KeyLimits, max_tracked: int) -> None:
        self.limits = limits
        self.max_tracked = max_tracked
        self.states: OrderedDict[str, _State] = OrderedDict()

    def state(self, key: str, now: float) -> _State:
        state = self.states.get(key)
        if state is None:
            state = self.states[key] = _State(tokens=float(self.limits.attempts), updated=now)
            while len(self.states) > self.max_tracked:
                self.states.popitem(last=False)
        else:
            self.states.move_to_end(key)
            rate = self.limits.attempts / self.limits.window_seconds
            state.tokens = min(float(self.limits.attempts), state.tokens + (now - state.updated) * rate)
            state.updated = now
            if state.failures and now - state.last_failure >= self.limits.max_lockout_seconds:
                state.failures = 0
        return state

    def wait(self, state: _State, now: float) -> float:
        """Seconds until this key may try again (0.0: now)."""
        locked = max(0.0, state.locked_until - now)
        short = 1.0 - state.tokens
        refill = short * self.limits.window_seconds / self.limits.attempts if short > 0 else 0.0
        return max(locked, refill)

    def fail(self, state: _State, now: float) -> None:
        state.failures += 1
        state.last_failure = now
        beyond = state.failures - self.limits.lockout_after
        if beyond >= 0:
            # Cap the exponent too: 2 ** 10_000 is a float overflow.
            lockout = min(self.limits.max_lockout_seconds, self.limits.lockout_seconds * 2 ** min(beyond, 32))
            state.locked_until = max(state.locked_until, now + lockout)


class LoginRateLimiter:
    """Decides whether a login attempt may be verified now; see the module docstring for the protocol."""

    def __init__(self, limits: LoginLimits = DEFAULT_LIMITS, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._users = _Table(limits.username, limits.max_tracked)
        self._addresses = _Table(limits.address, limits.max_tracked)

    def check(self, username: str, address: str) -> float:
        """Seconds to wait before this attempt may be made; 0.0 means go ahead, and the attempt is counted."""
        now = self._clock()
        user = self._users.state(_user_key(username), now)
        origin = self._addresses.state(address, now)
        wait = max(self._users.wait(user, now), self._addresses.wait(origin, now))
        if wait > 0:
            return wait
        user.tokens -= 1
        origin.tokens -= 1
        return 0.0

    def failure(self, username: str, address: str) -> None:
        """The attempt ``check`` allowed failed (wrong password, unknown or disabled user alike)."""
        now = self._clock()
        self._users.fail(self._users.state(_user_key(username), now), now)
        self._addresses.fail(self._addresses.state(address, now), now)

    def success(self, username: str, address: str) -> None:
        """The attempt succeeded: the username's failure streak ends."""
        now = self._clock()
        state = self._users.state(_user_key(username), now)
        state.failures = 0
        state.locked_until = 0.0


def _user_key(username: str) -> str:
    # Case variants of one name share a bucket; they cannot multiply an attacker's budget.
    return username.casefold()
