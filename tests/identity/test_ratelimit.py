"""Login rate limiting under a fake clock: buckets per username and per address, growing lockouts."""

from __future__ import annotations

import pytest

from mcp_bastion.identity.ratelimit import DEFAULT_LIMITS, KeyLimits, LoginLimits, LoginRateLimiter

ROOMY = KeyLimits(1000, 60.0, lockout_after=10**9, lockout_seconds=30.0, max_lockout_seconds=900.0)
"""A budget that never binds, to test the other key alone."""
LOCKING = KeyLimits(1000, 60.0, lockout_after=5, lockout_seconds=30.0, max_lockout_seconds=900.0)


class Clock:
    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now


def limiter(limits: LoginLimits = DEFAULT_LIMITS) -> tuple[LoginRateLimiter, Clock]:
    clock = Clock()
    return LoginRateLimiter(limits, clock=clock), clock


def test_five_attempts_per_username_then_one_every_twelve_seconds() -> None:
    limits, clock = limiter()
    assert [limits.check("alice", f"10.0.0.{i}") for i in range(5)] == [0.0] * 5
    assert limits.check("alice", "10.0.0.9") == pytest.approx(12.0)
    clock.now += 6
    assert limits.check("alice", "10.0.0.9") == pytest.approx(6.0)
    clock.now += 6
    assert limits.check("alice", "10.0.0.9") == 0.0
    assert limits.check("alice", "10.0.0.9") == pytest.approx(12.0)
    assert limits.check("bob", "10.0.0.9") == 0.0  # other users are not affected


def test_twenty_attempts_per_address() -> None:
    limits, clock = limiter()
    assert [limits.check(f"user{i}", "192.0.2.1") for i in range(20)] == [0.0] * 20
    assert limits.check("user20", "192.0.2.1") == pytest.approx(3.0)
    assert limits.check("user20", "192.0.2.2") == 0.0
    clock.now += 3
    assert limits.check("user21", "192.0.2.1") == 0.0


def test_refused_attempts_are_not_counted() -> None:
    limits, clock = limiter()
    for _ in range(5):
        limits.check("alice", "10.0.0.1")
    for _ in range(100):
        assert limits.check("alice", "10.0.0.1") > 0
    clock.now += 12
    assert limits.check("alice", "10.0.0.1") == 0.0


def test_case_variants_share_a_bucket() -> None:
    limits, _ = limiter()
    for name in ("alice", "Alice", "ALICE", "aLiCe", "alicE"):
        assert limits.check(name, "10.0.0.1") == 0.0
    assert limits.check("ALIce", "10.0.0.2") > 0


@pytest.mark.parametrize(
    ("failures", "locked_for"),
    [
        pytest.param(4, 0.0, id="4 failures: not yet"),
        pytest.param(5, 30.0, id="5 failures: 30 s"),
        pytest.param(6, 60.0, id="6: doubled"),
        pytest.param(7, 120.0, id="7: doubled again"),
        pytest.param(10, 900.0, id="10: capped at 15 min"),
        pytest.param(5000, 900.0, id="5000: still capped (no overflow)"),
    ],
)
def test_lockout_grows_with_consecutive_failures(failures: int, locked_for: float) -> None:
    limits, _ = limiter(LoginLimits(username=LOCKING, address=ROOMY))
    for _ in range(failures):
        limits.failure("alice", "10.0.0.1")
    assert limits.check("alice", "10.0.0.1") == pytest.approx(locked_for)
    assert limits.check("bob", "10.0.0.1") == 0.0


def test_a_lockout_ends() -> None:
    limits, clock = limiter(LoginLimits(username=LOCKING, address=ROOMY))
    for _ in range(5):
        limits.failure("alice", "10.0.0.1")
    clock.now += 29
    assert limits.check("alice", "10.0.0.1") == pytest.approx(1.0)
    clock.now += 1
    assert limits.check("alice", "10.0.0.1") == 0.0


def test_success_ends_the_username_streak_but_not_the_address_one() -> None:
    limits, _ = limiter(LoginLimits(username=LOCKING, address=LOCKING))
    for i in range(5):
        limits.failure(f"victim{i}", "198.51.100.7")
    for _ in range(4):
        limits.failure("mallory", "203.0.113.1")
    limits.success("mallory", "198.51.100.7")
    # The spraying address stays locked although it logged into its own account.
    assert limits.check("someone", "198.51.100.7") == pytest.approx(30.0)
    limits.failure("mallory", "203.0.113.1")
    assert limits.check("mallory", "203.0.113.2") == 0.0  # the streak restarted at 1


def test_a_streak_is_forgotten_after_a_quiet_period() -> None:
    limits, clock = limiter(LoginLimits(username=LOCKING, address=ROOMY))
    for _ in range(4):
        limits.failure("alice", "10.0.0.1")
    clock.now += 900
    limits.failure("alice", "10.0.0.1")  # the first of a new streak, not the fifth
    assert limits.check("alice", "10.0.0.1") == 0.0


def test_memory_is_bounded() -> None:
    limits, _ = limiter(LoginLimits(max_tracked=100))
    for i in range(10_000):
        limits.check(f"user{i}", f"10.0.{i // 256}.{i % 256}")
    assert len(limits._users.states) == 100
    assert len(limits._addresses.states) == 100
