"""The ``OAuthStore`` contract, checked on the in-memory store: the atomic single-use steps, rotation
outcomes, revocation lookups and purge. (Written against the protocol so another store can reuse it.)"""

from __future__ import annotations

import dataclasses

import pytest

from mcp_bastion.oauth.memstore import MemoryOAuthStore
from mcp_bastion.oauth.store import (
    ClientRecord,
    CodeRecord,
    ConsentRecord,
    FamilyRecord,
    OAuthStore,
    PendingRecord,
    RefreshRecord,
)

NOW = 1_000.0
FAMILY = FamilyRecord("f1", "c1", "u1", "https://gw.example/mcp", frozenset({"a"}), NOW, NOW + 100)
CODE = CodeRecord(
    b"h" * 32,
    "c1",
    "u1",
    "https://app.example/cb",
    "x" * 43,
    "https://gw.example/mcp",
    frozenset({"a"}),
    "f1",
    NOW,
    NOW + 60,
)


@pytest.fixture
def store() -> OAuthStore:
    return MemoryOAuthStore()


@pytest.mark.anyio
async def test_consume_code_once(store: OAuthStore) -> None:
    await store.put_code(CODE)
    first = await store.consume_code(CODE.code_hash, NOW + 1)
    second = await store.consume_code(CODE.code_hash, NOW + 1)  # same instant: still a replay
    third = await store.consume_code(CODE.code_hash, NOW + 2)
    assert first is not None
    assert first.used_at is None
    assert second is not None
    assert second.used_at == NOW + 1
    assert third is not None
    assert third.used_at == NOW + 1
    assert await store.consume_code(b"x" * 32, NOW) is None


@pytest.mark.anyio
async def test_take_pending_once(store: OAuthStore) -> None:
    pending = PendingRecord("p1", "c1", "https://app.example/cb", None, "x" * 43, "r", frozenset(), NOW, NOW + 1)
    await store.put_pending(pending)
    assert await store.get_pending("p1") == pending
    assert await store.take_pending("p1") == pending
    assert await store.take_pending("p1") is None
    assert await store.get_pending("p1") is None


@pytest.mark.parametrize(
    ("second_at", "kind"),
    [
        pytest.param(NOW, "grace", id="same-instant"),
        pytest.param(NOW + 5, "grace", id="end-of-grace"),
        pytest.param(NOW + 5.001, "reused", id="after-grace"),
    ],
)
@pytest.mark.anyio
async def test_rotate_refresh(store: OAuthStore, second_at: float, kind: str) -> None:
    await store.put_refresh(RefreshRecord(b"1" * 32, "f1", NOW - 10))
    first = await store.rotate_refresh(b"1" * 32, RefreshRecord(b"2" * 32, "f1", NOW), b"sealed-2", NOW, 5)
    assert first is not None
    assert (first.kind, first.record.rotated_at, first.record.successor) == ("rotated", NOW, b"sealed-2")
    assert await store.get_refresh(b"2" * 32) == RefreshRecord(b"2" * 32, "f1", NOW)
    again = await store.rotate_refresh(b"1" * 32, RefreshRecord(b"3" * 32, "f1", NOW), b"sealed-3", second_at, 5)
    assert again is not None
    assert (again.kind, again.record.successor) == (kind, b"sealed-2")
    assert await store.get_refresh(b"3" * 32) is None  # the loser's successor is never stored
    assert await store.rotate_refresh(b"9" * 32, RefreshRecord(b"4" * 32, "f1", NOW), b"", NOW, 5) is None


@pytest.mark.anyio
async def test_families(store: OAuthStore) -> None:
    await store.put_family(FAMILY)
    assert not await store.is_token_revoked(None, "f1", NOW)
    assert await store.is_token_revoked(None, "f1", NOW + 100)  # expired
    assert await store.is_token_revoked(None, "unknown", NOW)  # unknown family: fail closed
    assert await store.revoke_family("f1", NOW + 1, "code_replay")
    assert await store.revoke_family("f1", NOW + 2, "refresh_reuse")
    assert not await store.revoke_family("nope", NOW, "x")
    family = await store.get_family("f1")
    assert family is not None
    assert (family.revoked_at, family.reason) == (NOW + 1, "code_replay")  # the first revocation wins
    assert await store.is_token_revoked(None, "f1", NOW)


@pytest.mark.anyio
async def test_revoke_families_by_client_and_subject(store: OAuthStore) -> None:
    await store.put_family(FAMILY)
    await store.put_family(dataclasses.replace(FAMILY, id="f2", subject="u2"))
    await store.put_family(dataclasses.replace(FAMILY, id="f3", client_id="c2"))
    assert await store.revoke_families("c1", "u1", NOW, "consent_revoked") == 1
    assert [await store.is_token_revoked(None, f, NOW) for f in ("f1", "f2", "f3")] == [True, False, False]


@pytest.mark.anyio
async def test_access_token_jti(store: OAuthStore) -> None:
    assert not await store.is_token_revoked("j1", None, NOW)
    await store.revoke_access_token("j1", NOW + 300)
    assert await store.is_token_revoked("j1", None, NOW)
    assert not await store.is_token_revoked("j2", None, NOW)


@pytest.mark.anyio
async def test_assertion_jti(store: OAuthStore) -> None:
    assert await store.remember_assertion("c1", "j", NOW + 60, NOW)
    assert not await store.remember_assertion("c1", "j", NOW + 60, NOW + 30)
    assert await store.remember_assertion("c2", "j", NOW + 60, NOW)  # per client
    assert await store.remember_assertion("c1", "j", NOW + 200, NOW + 61)  # the old entry has expired


@pytest.mark.anyio
async def test_consents(store: OAuthStore) -> None:
    await store.put_consent(ConsentRecord("u1", "c1", "r1", frozenset({"a"}), NOW))
    await store.put_consent(ConsentRecord("u1", "c1", "r2", frozenset({"b"}), NOW + 1))
    await store.put_consent(ConsentRecord("u1", "c2", "r1", frozenset({"a"}), NOW))
    assert [c.resource for c in await store.get_consents("u1", "c1")] == ["r2", "r1"]
    assert await store.revoke_consents("u1", "c1", NOW + 2) == 2
    assert await store.revoke_consents("u1", "c1", NOW + 3) == 0
    assert all(c.revoked_at == NOW + 2 for c in await store.get_consents("u1", "c1"))
    assert (await store.get_consents("u1", "c2"))[0].revoked_at is None


@pytest.mark.anyio
async def test_clients(store: OAuthStore) -> None:
    record = ClientRecord("c1", "static", {"redirect_uris": ["https://app.example/cb"]}, None, NOW)
    await store.put_client(record)
    assert await store.get_client("c1") == record
    assert [c.client_id for c in await store.list_clients()] == ["c1"]
    assert await store.delete_client("c1")
    assert not await store.delete_client("c1")
    assert await store.get_client("c1") is None


@pytest.mark.anyio
async def test_purge(store: OAuthStore) -> None:
    await store.put_family(FAMILY)
    await store.put_refresh(RefreshRecord(b"1" * 32, "f1", NOW))
    await store.put_code(CODE)
    await store.revoke_access_token("j1", NOW + 10)
    await store.put_client(ClientRecord("https://app.example/c.json", "metadata", {}, None, NOW, NOW + 50))
    await store.put_client(ClientRecord("static", "static", {}, None, NOW))
    assert await store.purge(NOW + 1) == 0
    assert await store.purge(NOW + 100) == 5
    assert await store.get_refresh(b"1" * 32) is None
    assert await store.get_client("static") is not None


@pytest.mark.anyio
async def test_failure_raises() -> None:
    store = MemoryOAuthStore()
    store.fail = OSError("disk")
    with pytest.raises(OSError):  # noqa: PT011 - the injected failure itself
        await store.is_token_revoked("j", "f", NOW)
