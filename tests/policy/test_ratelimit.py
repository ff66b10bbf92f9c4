"""Tests of ``policy.ratelimit``: ``Rate.parse``, ``MemoryBuckets`` on a fake clock, and one behavioural
contract run against both ``MemoryBuckets`` and ``RedisBuckets`` on a real ``redis-server``.

The contract tests move time with ``Harness.advance``: the fake clock jumps for ``MemoryBuckets``; for Redis,
whose clock is the server's, the test sleeps. Their rates leave wide margins (3 at once, one more every
2 s), so a slow shared machine cannot flip a result. ``redis-server`` is a Debian package installed by
``scripts/test`` (``scripts/test-services``): when it is missing the Redis tests fail, they do not skip.
"""

from __future__ import annotations

import math
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import anyio
import pytest
import redis.asyncio as aioredis
import redis.exceptions

from mcp_bastion.errors import ConfigError, Unavailable
from mcp_bastion.policy.ratelimit import Buckets, MemoryBuckets, Rate, RedisBuckets
from tests.helpers.redis import free_port, redis_server

pytestmark = pytest.mark.anyio

START_TIMEOUT: Final = 10.0
"""Seconds redis-server may take to answer PING."""
STOP_TIMEOUT: Final = 5.0
SLOW: Final = Rate(burst=3, per_second=0.5)
"""The contract tests' rate: 3 at once, then one every 2 s."""
REFILL_ONE: Final = 2.1
"""Slightly more than one token's refill time at ``SLOW``."""


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


def _prefix() -> str:
    # Each test gets its own keys on the shared server.
    return f"test:{uuid.uuid4().hex}:"


# -- the contract, for both implementations ------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Harness:
    buckets: Buckets
    advance: Callable[[float], Awaitable[None]]


@pytest.fixture(params=["memory", "redis"])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    if request.param == "memory":
        clock = FakeClock()

        async def jump(seconds: float) -> None:
            clock.now += seconds

        yield Harness(MemoryBuckets(clock=clock), jump)
    else:
        url: str = request.getfixturevalue("redis_url")
        buckets = RedisBuckets(url, prefix=_prefix())
        try:
            yield Harness(buckets, anyio.sleep)
        finally:
            await buckets.aclose()


async def _exhaust(buckets: Buckets, key: str, rate: Rate = SLOW) -> None:
    for _ in range(rate.burst):
        assert await buckets.take(key, rate) == 0.0


async def test_a_new_key_holds_a_full_bucket(harness: Harness) -> None:
    assert await harness.buckets.take("k", SLOW, cost=3) == 0.0


async def test_burst_is_allowed_then_refused_with_the_wait(harness: Harness) -> None:
    await _exhaust(harness.buckets, "k")
    wait = await harness.buckets.take("k", SLOW)
    assert 0.0 < wait <= 2.0


async def test_a_refused_take_takes_nothing(harness: Harness) -> None:
    await _exhaust(harness.buckets, "k")
    first = await harness.buckets.take("k", SLOW)
    second = await harness.buckets.take("k", SLOW)
    assert 0.0 < second <= first


async def test_tokens_refill_over_time(harness: Harness) -> None:
    await _exhaust(harness.buckets, "k")
    assert await harness.buckets.take("k", SLOW) > 0.0
    await harness.advance(REFILL_ONE)
    assert await harness.buckets.take("k", SLOW) == 0.0
    assert await harness.buckets.take("k", SLOW) > 0.0


async def test_a_cost_above_one_takes_that_many(harness: Harness) -> None:
    assert await harness.buckets.take("k", SLOW, cost=2) == 0.0
    wait = await harness.buckets.take("k", SLOW, cost=2)
    assert 0.0 < wait <= 2.0
    assert await harness.buckets.take("k", SLOW, cost=1) == 0.0


async def test_keys_are_independent(harness: Harness) -> None:
    await _exhaust(harness.buckets, "alice")
    assert await harness.buckets.take("alice", SLOW) > 0.0
    await _exhaust(harness.buckets, "bob")


@pytest.mark.parametrize(
    "cost",
    [
        pytest.param(0.0, id="zero"),
        pytest.param(-1.0, id="negative"),
        pytest.param(4.0, id="above-burst"),
        pytest.param(math.nan, id="nan"),
        pytest.param(math.inf, id="infinite"),
    ],
)
async def test_a_cost_outside_0_to_burst_is_a_bug(harness: Harness, cost: float) -> None:
    with pytest.raises(ValueError, match="cost"):
        await harness.buckets.take("k", SLOW, cost=cost)


# -- MemoryBuckets, exactly, on a fake clock -----------------------------------------------------------


async def test_memory_waits_are_exact() -> None:
    clock = FakeClock()
    buckets = MemoryBuckets(clock=clock)
    await _exhaust(buckets, "k")
    assert await buckets.take("k", SLOW) == 2.0
    clock.now += 1.0
    assert await buckets.take("k", SLOW) == 1.0
    assert await buckets.take("k", SLOW, cost=3) == 5.0
    clock.now += 1.0
    assert await buckets.take("k", SLOW) == 0.0


async def test_memory_refills_fractions_and_caps_at_the_burst() -> None:
    clock = FakeClock()
    buckets = MemoryBuckets(clock=clock)
    rate = Rate(burst=10, per_second=2.0)
    assert await buckets.take("k", rate, cost=10) == 0.0
    clock.now += 1.5
    assert await buckets.take("k", rate, cost=3) == 0.0
    assert await buckets.take("k", rate, cost=1) == 0.5
    clock.now += 1_000.0
    await _exhaust(buckets, "k", rate)
    assert await buckets.take("k", rate) == 0.5


async def test_memory_clock_going_backwards_mints_nothing() -> None:
    clock = FakeClock()
    buckets = MemoryBuckets(clock=clock)
    await _exhaust(buckets, "k")
    clock.now -= 100.0
    assert await buckets.take("k", SLOW) == 2.0


async def test_memory_forgets_the_least_recently_updated_key_first() -> None:
    clock = FakeClock()
    buckets = MemoryBuckets(clock=clock, max_keys=2)
    one = Rate(burst=1, per_second=0.001)
    assert await buckets.take("a", one) == 0.0
    assert await buckets.take("b", one) == 0.0
    assert await buckets.take("a", one) > 0.0  # refused, but brought up to date: now b is the oldest
    assert await buckets.take("c", one) == 0.0  # b is forgotten
    assert len(buckets) == 2
    assert await buckets.take("a", one) > 0.0  # a is still known and empty: order c, a
    assert await buckets.take("b", one) == 0.0  # b comes back full; c, now the oldest, is forgotten
    assert await buckets.take("a", one) > 0.0


async def test_memory_holds_at_most_max_keys() -> None:
    buckets = MemoryBuckets(clock=FakeClock(), max_keys=100)
    for i in range(1_000):
        await buckets.take(f"user-{i}", SLOW)
    assert len(buckets) == 100


def test_memory_max_keys_must_be_positive() -> None:
    with pytest.raises(ConfigError):
        MemoryBuckets(max_keys=0)


# -- Rate ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "burst", "per_second"),
    [
        pytest.param("60/minute", 60, 1.0, id="per-minute"),
        pytest.param("10/second", 10, 10.0, id="per-second"),
        pytest.param("1000/hour", 1000, 1000 / 3600, id="per-hour"),
        pytest.param("5/s", 5, 5.0, id="s"),
        pytest.param("100/m", 100, 100 / 60, id="m"),
        pytest.param("2000/h", 2000, 2000 / 3600, id="h"),
        pytest.param("60/minute burst 20", 20, 1.0, id="smaller-burst"),
        pytest.param("1/hour burst 10", 10, 1 / 3600, id="larger-burst"),
        pytest.param("  30 / m   burst 5 ", 5, 0.5, id="spaces"),
    ],
)
def test_rate_parse(text: str, burst: int, per_second: float) -> None:
    rate = Rate.parse(text)
    assert rate.burst == burst
    assert rate.per_second == pytest.approx(per_second)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("60", id="no-period"),
        pytest.param("60/", id="empty-period"),
        pytest.param("60/day", id="unknown-period"),
        pytest.param("60/minutes", id="plural"),
        pytest.param("60/Minute", id="capitalised"),
        pytest.param("0/minute", id="zero-count"),
        pytest.param("-1/minute", id="negative-count"),
        pytest.param("1.5/second", id="fractional-count"),
        pytest.param("60/minute burst 0", id="zero-burst"),
        pytest.param("60/minute burst", id="burst-without-number"),
        pytest.param("60/minute burst 2.5", id="fractional-burst"),
        pytest.param("60/minute 20", id="missing-burst-word"),
        pytest.param("60 per minute", id="words"),
        pytest.param("minute/60", id="reversed"),
        pytest.param("60/minute; burst 5", id="trailing-junk"),
    ],
)
def test_rate_parse_refuses(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Rate.parse(text)
    assert caught.value.reason == "config_error"


@pytest.mark.parametrize(
    ("burst", "per_second"),
    [
        pytest.param(0, 1.0, id="zero-burst"),
        pytest.param(True, 1.0, id="bool-burst"),
        pytest.param(1, 0.0, id="zero-refill"),
        pytest.param(1, -1.0, id="negative-refill"),
        pytest.param(1, math.nan, id="nan-refill"),
        pytest.param(1, math.inf, id="infinite-refill"),
    ],
)
def test_rate_refuses_bad_values(burst: int, per_second: float) -> None:
    with pytest.raises(ConfigError):
        Rate(burst=burst, per_second=per_second)


def test_rate_refill_seconds() -> None:
    assert SLOW.refill_seconds == 6.0


# -- RedisBuckets only ---------------------------------------------------------------------------------


async def test_redis_replicas_share_the_buckets(redis_url: str) -> None:
    prefix = _prefix()
    first, second = RedisBuckets(redis_url, prefix=prefix), RedisBuckets(redis_url, prefix=prefix)
    try:
        assert await first.take("k", SLOW, cost=2) == 0.0
        assert await second.take("k", SLOW) == 0.0
        assert await first.take("k", SLOW) > 0.0
        assert await second.take("k", SLOW) > 0.0
    finally:
        await first.aclose()
        await second.aclose()


async def test_redis_keys_are_prefixed_and_expire_when_full_again(redis_url: str) -> None:
    prefix = _prefix()
    buckets, other = RedisBuckets(redis_url, prefix=prefix), RedisBuckets(redis_url, prefix=_prefix())
    raw = aioredis.Redis.from_url(redis_url)
    try:
        assert await buckets.take("k", SLOW, cost=3) == 0.0
        assert await other.take("k", SLOW, cost=3) == 0.0  # another prefix: another bucket
        ttl = await raw.pttl(prefix + "k")
        assert 0 < ttl <= 6_000  # the 6 s an empty bucket takes to fill
        assert await raw.exists(prefix + "k") == 1
    finally:
        await raw.aclose()
        await buckets.aclose()
        await other.aclose()


async def test_redis_script_error_is_unavailable(redis_url: str) -> None:
    prefix = _prefix()
    buckets = RedisBuckets(redis_url, prefix=prefix)
    raw = aioredis.Redis.from_url(redis_url)
    try:
        await raw.set(prefix + "k", "not a hash")  # HMGET on it fails inside the script: WRONGTYPE
        with pytest.raises(Unavailable) as caught:
            await buckets.take("k", SLOW)
        assert caught.value.reason == "unavailable"
    finally:
        await raw.aclose()
        await buckets.aclose()


async def test_redis_down_fails_closed(tmp_path: Path) -> None:
    with redis_server(tmp_path) as server:
        buckets = RedisBuckets(server.url, prefix=_prefix(), socket_timeout=0.2)
        try:
            assert await buckets.take("k", SLOW) == 0.0
            server.stop()
            with anyio.fail_after(5), pytest.raises(Unavailable) as caught:
                await buckets.take("k", SLOW)
            assert caught.value.reason == "unavailable"
        finally:
            await buckets.aclose()


async def test_redis_not_answering_fails_closed_within_the_timeout(tmp_path: Path) -> None:
    with redis_server(tmp_path) as server:
        buckets = RedisBuckets(server.url, prefix=_prefix(), socket_timeout=0.2)
        try:
            assert await buckets.take("k", SLOW) == 0.0
            server.process.send_signal(signal.SIGSTOP)  # connected, but never answers
            with anyio.fail_after(5), pytest.raises(Unavailable) as caught:
                await buckets.take("k", SLOW)
            assert isinstance(caught.value.__cause__, TimeoutError | redis.exceptions.TimeoutError)
        finally:
            server.process.send_signal(signal.SIGCONT)
            await buckets.aclose()


async def test_redis_never_reached_fails_closed() -> None:
    buckets = RedisBuckets(f"redis://127.0.0.1:{free_port()}", socket_timeout=0.2)
    try:
        with anyio.fail_after(5), pytest.raises(Unavailable):
            await buckets.take("k", SLOW)
    finally:
        await buckets.aclose()


async def test_redis_password_is_given_separately(tmp_path: Path) -> None:
    with redis_server(tmp_path, password="s3cret-pass") as server:
        good = RedisBuckets(server.url, password="s3cret-pass", prefix=_prefix())
        bad = RedisBuckets(server.url, password="wrong", prefix=_prefix())
        anonymous = RedisBuckets(server.url, prefix=_prefix())
        try:
            assert await good.take("k", SLOW) == 0.0
            for refused in (bad, anonymous):
                with anyio.fail_after(5), pytest.raises(Unavailable):
                    await refused.take("k", SLOW)
        finally:
            for buckets in (good, bad, anonymous):
                await buckets.aclose()


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("http://127.0.0.1:6379", id="http"),
        pytest.param("unix:///run/redis.sock", id="unix"),
        pytest.param("127.0.0.1:6379", id="no-scheme"),
        pytest.param("redis://", id="no-host"),
        pytest.param("redis://:hunter2@127.0.0.1:6379", id="password-in-url"),
        pytest.param("redis://user:hunter2@127.0.0.1:6379", id="user-and-password-in-url"),
        pytest.param("redis://127.0.0.1:6379?password=hunter2", id="password-in-query"),
    ],
)
def test_redis_url_is_checked(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        RedisBuckets(url)
    assert "hunter2" not in str(caught.value)


def test_redis_timeout_must_be_positive() -> None:
    with pytest.raises(ConfigError):
        RedisBuckets("redis://127.0.0.1:6379", socket_timeout=0.0)
