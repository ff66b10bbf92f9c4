"""The ``OAuthStore`` contract, once, run against every implementation: the in-memory reference
(``oauth.memstore``) and the SQL store on a real SQLite file (``storage.oauthstore``).

The single-use steps are also raced: several tasks at once, exactly one winner. On the SQL store the
tasks hold separate pooled connections, so the database's locking is what is tested, not the event loop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TypeVar

import anyio
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
from mcp_bastion.storage.oauthstore import SQLOAuthStore
from tests.storage.support import migrated

pytestmark = pytest.mark.anyio

T = TypeVar("T")
RACERS = 8


@pytest.fixture(params=["memory", "sql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OAuthStore]:
    if request.param == "memory":
        yield MemoryOAuthStore()
        return
    async with migrated(tmp_path / "bastion.db") as db:
        yield SQLOAuthStore(db)


async def race(calls: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run every call concurrently (separate tasks, so separate pooled connections); results in call order."""
    results: dict[int, T] = {}

    async def run(index: int) -> None:
        results[index] = await calls[index]()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            for index in range(len(calls)):
                group.start_soon(run, index)
    return [results[index] for index in range(len(calls))]


def digest(n: int) -> bytes:
    return n.to_bytes(32, "big")


def client(client_id: str = "c1", **changes: object) -> ClientRecord:
    record = ClientRecord(
        client_id=client_id,
        kind="registered",
        metadata={
            "redirect_uris": ["https://app.example/cb", "http://127.0.0.1/cb"],
            "token_endpoint_auth_method": "client_secret_basic",
            "client_name": "Ünïcode app",
            "nested": {"numbers": [1, 2.5, -3], "flag": True, "nothing": None},
        },
        secret_hash=digest(99),
        created_at=1000.25,
    )
    return dataclasses.replace(record, **changes)  # type: ignore[arg-type]


def pending(pending_id: str = "p1", **changes: object) -> PendingRecord:
    record = PendingRecord(
        id=pending_id,
        client_id="c1",
        redirect_uri="https://app.example/cb?x=1",
        state="st/ate",
        code_challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        resource="https://gw.example/mcp/customers",
        scopes=frozenset({"read", "write"}),
        created_at=1000.0,
        expires_at=1600.0,
    )
    return dataclasses.replace(record, **changes)  # type: ignore[arg-type]


def code(n: int = 1, **changes: object) -> CodeRecord:
    record = CodeRecord(
        code_hash=digest(n),
        client_id="c1",
        user_id="u1",
        redirect_uri="https://app.example/cb",
        code_challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        resource="https://gw.example/mcp/customers",
        scopes=frozenset({"read"}),
        family_id="f1",
        created_at=1000.0,
        expires_at=1060.0,
    )
    return dataclasses.replace(record, **changes)  # type: ignore[arg-type]


def family(family_id: str = "f1", **changes: object) -> FamilyRecord:
    record = FamilyRecord(
        id=family_id,
        client_id="c1",
        subject="u1",
        resource="https://gw.example/mcp/customers",
        scopes=frozenset({"read", "write"}),
        created_at=1000.0,
        expires_at=5000.0,
    )
    return dataclasses.replace(record, **changes)  # type: ignore[arg-type]


def refresh(n: int, family_id: str = "f1", created_at: float = 1000.0) -> RefreshRecord:
    return RefreshRecord(token_hash=digest(n), family_id=family_id, created_at=created_at)


def consent(user: str = "u1", client_id: str = "c1", resource: str = "r1", **changes: object) -> ConsentRecord:
    record = ConsentRecord(user, client_id, resource, frozenset({"read"}), granted_at=1000.0)
    return dataclasses.replace(record, **changes)  # type: ignore[arg-type]


# Clients.


async def test_clients_round_trip_replace_list_delete(store: OAuthStore) -> None:
    assert await store.get_client("c1") is None
    await store.put_client(client("c2"))
    await store.put_client(client("c1", kind="static", secret_hash=None))
    await store.put_client(client("c1", expires_at=2000.5))
    assert await store.get_client("c1") == client("c1", expires_at=2000.5)
    assert [record.client_id for record in await store.list_clients()] == ["c1", "c2"]
    assert await store.delete_client("c1") is True
    assert await store.delete_client("c1") is False
    assert await store.list_clients() == [client("c2")]


async def test_a_client_id_may_be_a_url(store: OAuthStore) -> None:
    url = "https://app.example/.well-known/client.json?v=1"
    record = client(url, kind="metadata", secret_hash=None, expires_at=1300.0)
    await store.put_client(record)
    assert await store.get_client(url) == record


# Pending authorizations.


async def test_pending_is_handed_out_once(store: OAuthStore) -> None:
    await store.put_pending(pending())
    await store.put_pending(pending("p2", state=None))
    assert await store.get_pending("p1") == pending()
    assert await store.get_pending("p2") == pending("p2", state=None)
    assert await store.take_pending("p1") == pending()
    assert await store.take_pending("p1") is None
    assert await store.get_pending("p1") is None
    assert await store.take_pending("unknown") is None


async def test_concurrent_take_pending_has_one_winner(store: OAuthStore) -> None:
    await store.put_pending(pending())
    results = await race([partial(store.take_pending, "p1") for _ in range(RACERS)])
    assert [record for record in results if record is not None] == [pending()]


# Authorization codes.


async def test_code_is_consumed_once_and_a_replay_sees_the_first_use(store: OAuthStore) -> None:
    await store.put_code(code())
    assert await store.consume_code(digest(404), now=1001.0) is None
    # The winner gets the record as it was (unused); a replay sees the first use.
    assert await store.consume_code(digest(1), now=1001.0) == code()
    assert await store.consume_code(digest(1), now=1002.0) == code(used_at=1001.0)
    assert await store.consume_code(digest(1), now=1003.0) == code(used_at=1001.0)


async def test_concurrent_consume_code_has_one_winner(store: OAuthStore) -> None:
    await store.put_code(code())
    found = await race([partial(store.consume_code, digest(1), now=1001.0 + i) for i in range(RACERS)])
    results = [record for record in found if record is not None]
    assert len(results) == RACERS
    (winner,) = [i for i, record in enumerate(results) if record.used_at is None]
    # Every loser sees the winner's time: a replay, and nothing else.
    assert {record.used_at for i, record in enumerate(results) if i != winner} == {1001.0 + winner}


# Token families.


async def test_family_revocation_keeps_the_first_reason(store: OAuthStore) -> None:
    await store.put_family(family())
    assert await store.get_family("f1") == family()
    assert await store.revoke_family("f1", now=1100.0, reason="code_replay") is True
    assert await store.revoke_family("f1", now=1200.0, reason="refresh_reuse") is True
    assert await store.get_family("f1") == family(revoked_at=1100.0, reason="code_replay")
    assert await store.revoke_family("unknown", now=1100.0, reason="x") is False
    assert await store.get_family("unknown") is None


async def test_revoke_families_of_one_client_and_subject(store: OAuthStore) -> None:
    await store.put_family(family("f1"))
    await store.put_family(family("f2"))
    await store.put_family(family("f3", revoked_at=900.0, reason="earlier"))
    await store.put_family(family("f4", subject="u2"))
    await store.put_family(family("f5", client_id="c2"))
    assert await store.revoke_families("c1", "u1", now=1100.0, reason="consent_revoked") == 2
    assert await store.get_family("f2") == family("f2", revoked_at=1100.0, reason="consent_revoked")
    assert await store.get_family("f3") == family("f3", revoked_at=900.0, reason="earlier")
    assert await store.get_family("f4") == family("f4", subject="u2")
    assert await store.get_family("f5") == family("f5", client_id="c2")


# Refresh tokens.


async def test_rotation_then_grace_then_reuse(store: OAuthStore) -> None:
    await store.put_family(family())
    await store.put_refresh(refresh(1))
    assert await store.get_refresh(digest(1)) == refresh(1)
    assert await store.rotate_refresh(digest(404), refresh(2), b"sealed", now=1100.0, grace_seconds=5) is None

    rotated = await store.rotate_refresh(digest(1), refresh(2, created_at=1100.0), b"sealed-2", 1100.0, 5.0)
    assert rotated is not None
    assert rotated.kind == "rotated"
    assert rotated.record == dataclasses.replace(refresh(1), rotated_at=1100.0, successor=b"sealed-2")
    assert await store.get_refresh(digest(2)) == refresh(2, created_at=1100.0)

    # A duplicate within the window changes nothing: its would-be successor is not stored.
    grace = await store.rotate_refresh(digest(1), refresh(3), b"sealed-3", now=1105.0, grace_seconds=5.0)
    assert grace is not None
    assert grace.kind == "grace"
    assert grace.record == rotated.record
    assert await store.get_refresh(digest(3)) is None

    reused = await store.rotate_refresh(digest(1), refresh(4), b"sealed-4", now=1105.5, grace_seconds=5.0)
    assert reused is not None
    assert reused.kind == "reused"
    assert reused.record == rotated.record
    assert await store.get_refresh(digest(4)) is None


async def test_concurrent_rotation_has_one_winner(store: OAuthStore) -> None:
    await store.put_family(family())
    await store.put_refresh(refresh(1))
    calls = [
        partial(store.rotate_refresh, digest(1), refresh(100 + n), f"pair-{n}".encode(), 1100.0, 5.0)
        for n in range(RACERS)
    ]
    results = [outcome for outcome in await race(calls) if outcome is not None]
    assert len(results) == RACERS
    assert sorted(outcome.kind for outcome in results) == ["grace"] * (RACERS - 1) + ["rotated"]
    (winner,) = [n for n, outcome in enumerate(results) if outcome.kind == "rotated"]
    assert {outcome.record.successor for outcome in results} == {f"pair-{winner}".encode()}
    stored = [n for n in range(RACERS) if await store.get_refresh(digest(100 + n)) is not None]
    assert stored == [winner]


# Consents.


async def test_consents_newest_first_replace_and_revoke(store: OAuthStore) -> None:
    await store.put_consent(consent(resource="r1", granted_at=1000.0))
    await store.put_consent(consent(resource="r2", granted_at=1200.0))
    await store.put_consent(consent(resource="r1", scopes=frozenset({"read", "write"}), granted_at=1100.0))
    await store.put_consent(consent(user="u2"))
    await store.put_consent(consent(client_id="c2"))
    found = await store.get_consents("u1", "c1")
    assert found == [
        consent(resource="r2", granted_at=1200.0),
        consent(resource="r1", scopes=frozenset({"read", "write"}), granted_at=1100.0),
    ]
    assert await store.revoke_consents("u1", "c1", now=1300.0) == 2
    assert await store.revoke_consents("u1", "c1", now=1400.0) == 0
    assert [record.revoked_at for record in await store.get_consents("u1", "c1")] == [1300.0, 1300.0]
    assert await store.get_consents("u2", "c1") == [consent(user="u2")]
    assert await store.get_consents("u1", "c2") == [consent(client_id="c2")]
    assert await store.get_consents("nobody", "c1") == []


# Revocation, as the resource side asks.


async def test_is_token_revoked(store: OAuthStore) -> None:
    await store.put_family(family("live"))
    await store.put_family(family("revoked", revoked_at=1100.0, reason="x"))
    await store.put_family(family("ending", expires_at=2000.0))
    await store.revoke_access_token("bad-jti", expires_at=1300.0)
    now = 1200.0
    assert await store.is_token_revoked(None, None, now) is False
    assert await store.is_token_revoked("good-jti", None, now) is False
    assert await store.is_token_revoked("bad-jti", None, now) is True
    assert await store.is_token_revoked("good-jti", "live", now) is False
    assert await store.is_token_revoked("bad-jti", "live", now) is True
    assert await store.is_token_revoked(None, "revoked", now) is True
    assert await store.is_token_revoked(None, "unknown", now) is True
    assert await store.is_token_revoked(None, "ending", 1999.0) is False
    assert await store.is_token_revoked(None, "ending", 2000.0) is True


async def test_a_second_revocation_never_shortens_the_first(store: OAuthStore) -> None:
    await store.revoke_access_token("jti", expires_at=2000.0)
    await store.revoke_access_token("jti", expires_at=1500.0)
    await store.purge(now=1800.0)
    assert await store.is_token_revoked("jti", None, now=1800.0) is True
    await store.revoke_access_token("jti", expires_at=2500.0)
    await store.purge(now=2200.0)
    assert await store.is_token_revoked("jti", None, now=2200.0) is True
    assert await store.purge(now=2500.0) == 1
    assert await store.is_token_revoked("jti", None, now=2500.0) is False


# Client assertions.


async def test_an_assertion_jti_counts_once_until_it_expires(store: OAuthStore) -> None:
    assert await store.remember_assertion("c1", "j1", expires_at=1100.0, now=1000.0) is True
    assert await store.remember_assertion("c1", "j1", expires_at=1150.0, now=1050.0) is False
    assert await store.remember_assertion("c2", "j1", expires_at=1100.0, now=1050.0) is True
    assert await store.remember_assertion("c1", "j1", expires_at=1099.0, now=1099.9) is False
    # Once past its expiry it no longer counts (and is remembered afresh).
    assert await store.remember_assertion("c1", "j1", expires_at=1200.0, now=1100.0) is True
    assert await store.remember_assertion("c1", "j1", expires_at=1300.0, now=1150.0) is False


async def test_concurrent_assertions_with_one_jti_have_one_winner(store: OAuthStore) -> None:
    calls = [partial(store.remember_assertion, "c1", "j1", expires_at=1100.0, now=1000.0) for _ in range(RACERS)]
    assert sorted(await race(calls)) == [False] * (RACERS - 1) + [True]


# Purge.


async def test_purge_removes_exactly_what_expired(store: OAuthStore) -> None:
    now = 2000.0
    await store.put_client(client("static", kind="static"))
    await store.put_client(client("cached-old", kind="metadata", expires_at=now))
    await store.put_client(client("cached-new", kind="metadata", expires_at=now + 1))
    await store.put_pending(pending("old", expires_at=now - 1))
    await store.put_pending(pending("new", expires_at=now + 1))
    await store.put_code(code(1, expires_at=now))
    await store.put_code(code(2, expires_at=now + 1))
    await store.put_family(family("old", expires_at=now))
    await store.put_family(family("new", expires_at=now + 1))
    await store.put_refresh(refresh(1, family_id="old"))
    await store.put_refresh(refresh(2, family_id="old"))
    await store.put_refresh(refresh(3, family_id="new"))
    await store.put_refresh(refresh(4, family_id="never-existed"))
    await store.revoke_access_token("old", expires_at=now - 5)
    await store.revoke_access_token("new", expires_at=now + 5)
    await store.remember_assertion("c1", "old", expires_at=now, now=now - 10)
    await store.remember_assertion("c1", "new", expires_at=now + 10, now=now - 10)
    await store.put_consent(consent())

    # client, pending, code, family, 3 refresh tokens, revoked jti, assertion jti.
    assert await store.purge(now) == 9
    assert await store.purge(now) == 0
    assert [record.client_id for record in await store.list_clients()] == ["cached-new", "static"]
    assert await store.get_pending("old") is None
    assert await store.get_pending("new") is not None
    assert await store.consume_code(digest(1), now) is None
    assert await store.consume_code(digest(2), now) is not None
    assert await store.get_family("old") is None
    assert await store.get_family("new") is not None
    assert [n for n in (1, 2, 3, 4) if await store.get_refresh(digest(n)) is not None] == [3]
    assert await store.is_token_revoked("old", None, now) is False
    assert await store.is_token_revoked("new", None, now) is True
    assert await store.remember_assertion("c1", "new", expires_at=now + 20, now=now) is False
    assert await store.get_consents("u1", "c1") == [consent()]
