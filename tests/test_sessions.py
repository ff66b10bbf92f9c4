"""The session store: ids bound to a principal and an endpoint, idle expiry, a cap per principal."""

from __future__ import annotations

import pytest

from mcp_bastion.errors import RateLimited, SessionRejected
from mcp_bastion.exchange import Principal
from mcp_bastion.sessions import SessionStore
from mcp_bastion.upstream.base import Channel

ALICE = Principal("alice", "https://issuer", "bearer")
MALLORY = Principal("mallory", "https://issuer", "bearer")
ALICE_ELSEWHERE = Principal("alice", "https://other-issuer", "bearer")
CHANNEL: Channel = object()  # type: ignore[assignment]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("principal", "endpoint", "reason"),
    [
        pytest.param(MALLORY, "up", "session_foreign", id="another-user"),
        pytest.param(ALICE_ELSEWHERE, "up", "session_foreign", id="same-name-other-issuer"),
        pytest.param(ALICE, "other", "session_foreign", id="another-endpoint"),
    ],
)
def test_foreign_use_is_refused(principal: Principal, endpoint: str, reason: str) -> None:
    store = SessionStore(max_per_principal=4, idle_seconds=60)
    session = store.create(ALICE, "up", CHANNEL)
    assert store.get(session.id, ALICE, "up") is session
    with pytest.raises(SessionRejected) as info:
        store.get(session.id, principal, endpoint)
    assert info.value.reason == reason
    assert info.value.public_reason == "session_unknown"


def test_ids_are_unguessable_and_unique() -> None:
    store = SessionStore(max_per_principal=1000, idle_seconds=60)
    ids = {store.create(ALICE, "up", CHANNEL).id for _ in range(200)}
    assert len(ids) == 200
    assert all(len(i) >= 43 for i in ids)  # 256 bits, url-safe base64


def test_idle_sessions_expire() -> None:
    clock = Clock()
    store = SessionStore(max_per_principal=4, idle_seconds=60, clock=clock)
    session = store.create(ALICE, "up", CHANNEL)
    clock.now += 61
    with pytest.raises(SessionRejected) as info:
        store.get(session.id, ALICE, "up")
    assert info.value.reason == "session_expired"
    assert [s.id for s in store.expired()] == [session.id]
    assert len(store) == 0


def test_cap_per_principal() -> None:
    store = SessionStore(max_per_principal=2, idle_seconds=60)
    store.create(ALICE, "up", CHANNEL)
    store.create(ALICE, "up", CHANNEL)
    with pytest.raises(RateLimited):
        store.create(ALICE, "up", CHANNEL)
    store.create(MALLORY, "up", CHANNEL)  # others are not affected
