"""The in-memory login limiter."""

from __future__ import annotations

import pytest

from mcp_bastion.asgi.pages.limiter import LoginLimiter, MemoryLoginLimiter
from tests.oauth.support import FakeClock

pytestmark = pytest.mark.anyio


def limiter(clock: FakeClock, **kw: int) -> MemoryLoginLimiter:
    return MemoryLoginLimiter(max_failures=3, window=60.0, clock=clock, **kw)


async def test_locks_a_username_after_max_failures_until_the_window_passes() -> None:
    clock = FakeClock(1000.0)
    lim: LoginLimiter = limiter(clock)
    for address in ("a1", "a2", "a3"):
        assert await lim.check("alice", address) == 0
        await lim.failed("alice", address)
    clock.now += 10
    assert await lim.check("alice", "a4") == pytest.approx(50.0)
    assert await lim.check("bob", "a4") == 0
    clock.now += 50
    assert await lim.check("alice", "a4") == 0


async def test_locks_an_address_guessing_many_usernames() -> None:
    clock = FakeClock(1000.0)
    lim = limiter(clock)
    for username in ("u1", "u2", "u3"):
        await lim.failed(username, "203.0.113.9")
    assert await lim.check("u4", "203.0.113.9") == pytest.approx(60.0)
    assert await lim.check("u4", "198.51.100.1") == 0


async def test_success_forgives_the_user_not_the_address() -> None:
    clock = FakeClock(1000.0)
    lim = limiter(clock)
    for _ in range(3):
        await lim.failed("alice", "a1")
    await lim.succeeded("alice", "a1")
    assert await lim.check("alice", "a2") == 0
    assert await lim.check("other", "a1") > 0


async def test_memory_is_bounded() -> None:
    lim = limiter(FakeClock(1000.0), max_keys=10)
    for i in range(100):
        await lim.failed(f"user-{i}", "a1")
    assert len(lim._failures) <= 10
