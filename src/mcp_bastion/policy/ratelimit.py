"""Token-bucket rate limits for the gate: per user, per client and per tool, in one process or shared
through Redis by every replica.

A ``Rate`` is a bucket of ``burst`` tokens refilled at ``per_second`` tokens per second (``Rate.parse``
reads the settings' form, ``"60/minute"`` or ``"60/minute burst 20"``). ``Buckets.take(key, rate, cost)``
either takes ``cost`` tokens from ``key``'s bucket and returns ``0.0`` (allowed), or takes nothing and
returns the seconds until ``cost`` tokens will be there (refused: the caller raises ``RateLimited`` with
that ``retry_after``). Two implementations: ``MemoryBuckets`` (one process, clock injected, no I/O) and
``RedisBuckets`` (one Lua script per take, so every replica draws from the same buckets).

Invariants:
- a key never seen, or forgotten, holds a full bucket: ``burst`` tokens;
- tokens refill continuously at ``per_second``, never above ``burst``; the bucket's state is its tokens at
  its last update time, so time that passes between calls is accounted for exactly once;
- a take is all or nothing and atomic: a refused take changes nothing that matters (the bucket is only
  brought up to date), so refused requests cost nothing and earn nothing, and the wait returned is
  exactly ``(cost - tokens) / per_second``;
- ``0 < cost <= burst``, else ``ValueError``: a cost above the burst could never be served and would
  be refused forever;
- a clock that goes backwards refills nothing (elapsed time is clamped at zero), it never mints tokens;
- ``RedisBuckets`` reads time from the Redis server (``TIME``), never from the replica, so replicas with
  skewed clocks agree; each key expires (``PEXPIRE``) when its bucket would be full again, so idle keys
  vanish, and a vanished key is by the first invariant exactly the state it expired in;
- ``RedisBuckets`` fails closed: any Redis failure (refused connection, timeout, script or type error,
  unexpected reply) raises ``errors.Unavailable``; a take is never allowed because Redis is down;
- ``MemoryBuckets`` is bounded: it holds ``max_keys`` keys at most and forgets the least recently
  updated first. A forgotten key comes back full, which loses nothing when its bucket had refilled
  anyway (the least recently updated key is the one most likely to have); when more than ``max_keys``
  keys are active within one refill period, the oldest of them get their burst back early. Keys are
  authenticated principals, clients and tool names, not values a caller can invent, and the default
  bound is far above their number.
"""

from __future__ import annotations

import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol
from urllib.parse import parse_qs, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from mcp_bastion.errors import ConfigError, Unavailable

DEFAULT_MAX_KEYS: Final = 100_000
"""Keys ``MemoryBuckets`` holds by default (two floats and a key each: a few MB at most)."""
DEFAULT_PREFIX: Final = "mcp-bastion:rl:"
"""Prefix of every Redis key ``RedisBuckets`` writes."""
DEFAULT_REDIS_TIMEOUT_SECONDS: Final = 0.5
"""Connect and socket timeout of each Redis call; a take that cannot finish in time fails closed."""

_PERIODS: Final = {"second": 1.0, "s": 1.0, "minute": 60.0, "m": 60.0, "hour": 3600.0, "h": 3600.0}
_RATE: Final = re.compile(r"\s*(?P<count>\d+)\s*/\s*(?P<period>[a-z]+)(?:\s+burst\s+(?P<burst>\d+))?\s*")


@dataclass(frozen=True, slots=True)
class Rate:
    """A bucket of ``burst`` tokens refilled at ``per_second`` tokens per second."""

    burst: int
    """The bucket's capacity: the most requests (of cost 1) allowed at once; at least 1."""
    per_second: float
    """Tokens added per second; finite and above zero."""

    def __post_init__(self) -> None:
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1:
            raise ConfigError(f"rate limit burst must be an integer >= 1, got {self.burst!r}")
        if not (math.isfinite(self.per_second) and self.per_second > 0):
            raise ConfigError(f"rate limit refill must be finite and > 0 tokens per second, got {self.per_second!r}")

    @property
    def refill_seconds(self) -> float:
        """Seconds an empty bucket takes to fill up."""
        return self.burst / self.per_second

    @classmethod
    def parse(cls, text: str) -> Rate:
        """Read ``"<count>/<period>"`` with an optional ``" burst <n>"``; the burst defaults to the count.

        The period is ``second``/``s``, ``minute``/``m`` or ``hour``/``h``: ``"60/minute"`` allows 60 at once
        and one more every second; ``"60/minute burst 20"`` the same rate with at most 20 at once.
        """
        match = _RATE.fullmatch(text)
        period = _PERIODS.get(match["period"]) if match else None
        if match is None or period is None:
            raise ConfigError(
                f"rate limit {text!r} is not '<count>/<second|minute|hour>' with an optional ' burst <n>' "
                "(e.g. '60/minute', '10/s', '1000/hour burst 50')"
            )
        count = int(match["count"])
        if count < 1:
            raise ConfigError(f"rate limit {text!r}: the count must be at least 1")
        burst = int(match["burst"]) if match["burst"] is not None else count
        if burst < 1:
            raise ConfigError(f"rate limit {text!r}: the burst must be at least 1")
        return cls(burst=burst, per_second=count / period)


class Buckets(Protocol):
    """Token buckets by key; see the module docstring for the contract."""

    async def take(self, key: str, rate: Rate, cost: float = 1.0) -> float:
        """Take ``cost`` tokens from ``key``'s bucket and return 0.0, or take nothing and return the seconds
        until ``cost`` tokens are available."""
        ...

    async def aclose(self) -> None:
        """Release connections (nothing for the in-process implementation)."""
        ...


def _check_cost(rate: Rate, cost: float) -> None:
    if not (math.isfinite(cost) and 0 < cost <= rate.burst):
        raise ValueError(f"cost must be > 0 and at most the burst ({rate.burst}), got {cost!r}")


class MemoryBuckets:
    """Token buckets in this process's memory: one replica, or tests. Pure: the clock is injected."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if max_keys < 1:
            raise ConfigError(f"rate limit max_keys must be at least 1, got {max_keys!r}")
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        """key -> (tokens, updated_at), least recently updated first."""

    def __len__(self) -> int:
        """Keys held now (at most ``max_keys``)."""
        return len(self._buckets)

    async def take(self, key: str, rate: Rate, cost: float = 1.0) -> float:
        _check_cost(rate, cost)
        now = self._clock()
        state = self._buckets.pop(key, None)
        if state is None:
            tokens = float(rate.burst)
        else:
            tokens, updated = state
            tokens = min(float(rate.burst), tokens + max(0.0, now - updated) * rate.per_second)
        wait = 0.0
        if tokens >= cost:
            tokens -= cost
        else:
            wait = (cost - tokens) / rate.per_second
        # Re-inserted at the end: the dict stays ordered by last update, so eviction takes the oldest.
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return wait

    async def aclose(self) -> None:
        return None


# KEYS[1]: the bucket's key. ARGV: burst, tokens per second, cost. The hash holds t (tokens) and u (the
# server time of the last update, in microseconds). Numbers are written and returned as '%.17g' strings:
# Lua numbers returned to Redis are truncated to integers, and microsecond timestamps need 16 digits.
_TAKE_SCRIPT: Final = """
local burst = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local state = redis.call('HMGET', KEYS[1], 't', 'u')
local tokens = tonumber(state[1])
local updated = tonumber(state[2])
if tokens == nil or updated == nil then
  tokens = burst
else
  tokens = math.min(burst, tokens + math.max(0, now - updated) / 1000000 * rate)
end
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
else
  wait = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 't', string.format('%.17g', tokens), 'u', string.format('%.0f', now))
redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil((burst - tokens) / rate * 1000)))
return string.format('%.17g', wait)
"""


class RedisBuckets:
    """Token buckets in Redis, shared by every replica that uses the same server and prefix.

    ``url`` is ``redis://host:port/db`` or ``rediss://`` (TLS); the password is passed separately so it
    never sits in a URL that could be logged. Each take is one ``EVALSHA`` with ``socket_timeout`` seconds to
    connect and to answer, and one immediate retry on a broken pooled connection (a server restart);
    whatever still fails raises ``Unavailable``.
    """

    def __init__(
        self,
        url: str,
        *,
        password: str | None = None,
        socket_timeout: float = DEFAULT_REDIS_TIMEOUT_SECONDS,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            raise ConfigError(f"rate limit Redis URL must be redis://host[:port][/db] or rediss://…, got {url!r}")
        if parts.password is not None or "password" in parse_qs(parts.query):
            # Not echoing the URL: it holds the secret.
            raise ConfigError("rate limit Redis URL must not hold a password: set the password separately")
        if not (math.isfinite(socket_timeout) and socket_timeout > 0):
            raise ConfigError(f"rate limit Redis socket_timeout must be > 0 seconds, got {socket_timeout!r}")
        self._prefix = prefix
        self._where = f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}"
        self._redis = aioredis.Redis.from_url(
            url,
            password=password,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            retry=Retry(NoBackoff(), retries=1),
        )
        self._take = self._redis.register_script(_TAKE_SCRIPT)

    async def take(self, key: str, rate: Rate, cost: float = 1.0) -> float:
        _check_cost(rate, cost)
        try:
            reply = await self._take(keys=[self._prefix + key], args=[rate.burst, repr(rate.per_second), repr(cost)])
        except (RedisError, OSError) as exc:
            # OSError covers TimeoutError and socket errors raised outside redis-py's own wrapping.
            raise Unavailable(f"rate limit store {self._where}: {type(exc).__name__}: {exc}") from exc
        try:
            wait = float(reply)
        except (TypeError, ValueError):
            wait = math.nan
        if not (math.isfinite(wait) and wait >= 0):
            raise Unavailable(f"rate limit store {self._where}: unexpected reply {reply!r}")
        return wait

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()
