"""The revocation cache: quick "not revoked" answers, never a stale "not revoked" after a local revocation,
store errors still fail closed."""

from __future__ import annotations

import pytest

from mcp_bastion.oauth.access_token import AccessClaims
from mcp_bastion.oauth.revocationcache import RevocationCache, RevokingStore

pytestmark = pytest.mark.anyio


def claims(jti: str = "j1", sid: str = "f1") -> AccessClaims:
    return AccessClaims(
        "https://gw", "alice", ("https://gw/mcp/x",), 9e12, None, None, jti, "c", frozenset(), {"sid": sid}
    )


class Check:
    def __init__(self) -> None:
        self.revoked: set[str] = set()
        self.calls = 0
        self.fail = False

    async def is_revoked(self, c: AccessClaims) -> bool:
        self.calls += 1
        if self.fail:
            raise OSError("store down")
        return c.jwt_id in self.revoked


class Store:
    def __init__(self, check: Check) -> None:
        self.check = check

    async def revoke_access_token(self, jti: str, expires_at: float) -> None:
        self.check.revoked.add(jti)

    async def get_client(self, client_id: str) -> str:
        return client_id


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_negative_answers_are_cached_for_the_ttl() -> None:
    check, clock = Check(), Clock()
    cache = RevocationCache(check, ttl=1.0, clock=clock)
    assert not await cache.is_revoked(claims())
    assert not await cache.is_revoked(claims())
    assert check.calls == 1
    clock.now = 1.5
    assert not await cache.is_revoked(claims())
    assert check.calls == 2


async def test_a_local_revocation_takes_effect_at_once() -> None:
    check = Check()
    cache = RevocationCache(check, ttl=60.0)
    store = RevokingStore(Store(check), cache)
    assert not await cache.is_revoked(claims())
    await store.revoke_access_token("j1", 9e12)
    assert await cache.is_revoked(claims())
    assert await store.get_client("c") == "c"  # reads pass through untouched


async def test_revoked_is_never_cached_as_clear_and_errors_fail_closed() -> None:
    check = Check()
    check.revoked.add("j1")
    cache = RevocationCache(check, ttl=60.0)
    assert await cache.is_revoked(claims())
    assert await cache.is_revoked(claims())
    assert check.calls == 2
    check.fail = True
    with pytest.raises(OSError, match="store down"):
        await cache.is_revoked(claims("j2"))


async def test_unset_check_is_a_bug_not_an_open_door() -> None:
    with pytest.raises(RuntimeError):
        await RevocationCache().is_revoked(claims())
