"""``storage.linkstore.SQLLinkStore``: pending upstream account links shared by replicas, on a real SQLite
file and on a throwaway PostgreSQL cluster (skipped where one cannot run).

Two stores over one database stand for two replicas; the single-use take is raced on separate pooled
connections, so the database decides the winner, not the event loop.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from sqlalchemy import select, update

from mcp_bastion.delegation.oauthlink import (
    LINK_SECONDS,
    MAX_LINKS_PER_PRINCIPAL,
    PendingLink,
    StartedLink,
    same_browser,
)
from mcp_bastion.exchange import Principal
from mcp_bastion.oauth.grants import digest
from mcp_bastion.storage.db import Database
from mcp_bastion.storage.linkstore import SQLLinkStore
from mcp_bastion.storage.models import UpstreamLinkRow
from mcp_bastion.vault.envelope import Vault
from mcp_bastion.vault.keyfile import LocalKeyFile

pytestmark = pytest.mark.anyio

ALICE = Principal("u-alice", "https://gw.example", "bearer")
BOB = Principal("u-bob", "https://gw.example", "bearer")
RACERS = 8


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def vault(tmp_path: Path) -> Vault:
    return Vault(LocalKeyFile(tmp_path / "vault.key"))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def replicas(db: Database, vault: Vault, clock: Clock) -> tuple[SQLLinkStore, SQLLinkStore]:
    """Two gateways sharing one database and one vault key."""
    return SQLLinkStore(db, vault, clock=clock), SQLLinkStore(db, vault, clock=clock)


async def start(store: SQLLinkStore, link: PendingLink) -> tuple[StartedLink, str]:
    marked = await store.mark_started(link)
    assert marked is not None
    return marked


async def test_a_link_made_on_one_replica_is_completed_on_another(
    replicas: tuple[SQLLinkStore, SQLLinkStore],
) -> None:
    a, b = replicas
    link = await a.create("crm", ALICE)
    assert await b.get(link.id) == link
    started, cookie = await start(b, link)
    assert (started.principal, started.upstream) == (ALICE, "crm")
    taken = await a.take_by_state(started.state)
    assert taken == started  # the verifier came back out of the vault blob
    assert same_browser(taken, cookie)
    assert not same_browser(taken, cookie + "x")
    assert await a.get(link.id) is None
    assert await b.take_by_state(started.state) is None  # single use


async def test_nothing_secret_is_stored_in_the_clear(db: Database, replicas: tuple[SQLLinkStore, SQLLinkStore]) -> None:
    a, _ = replicas
    started, cookie = await start(a, await a.create("crm", ALICE))
    async with db.read() as connection:
        row = (await connection.execute(select(UpstreamLinkRow))).one()
    stored = repr(tuple(row))
    for value in (started.state, started.verifier, cookie):
        assert value not in stored
    assert row.state_hash == digest(started.state)


async def test_only_a_started_link_can_be_taken(replicas: tuple[SQLLinkStore, SQLLinkStore]) -> None:
    a, _ = replicas
    link = await a.create("crm", ALICE)
    assert await a.take_by_state("") is None
    assert await a.take_by_state(link.id) is None
    assert await a.get(link.id) is not None  # still pending


async def test_signing_in_again_restarts_the_link(replicas: tuple[SQLLinkStore, SQLLinkStore]) -> None:
    a, b = replicas
    link = await a.create("crm", ALICE)
    first, _ = await start(a, link)
    second, cookie = await start(b, link)
    assert await a.take_by_state(first.state) is None
    taken = await a.take_by_state(second.state)
    assert taken is not None
    assert same_browser(taken, cookie)


async def test_exactly_one_of_concurrent_takes_wins(replicas: tuple[SQLLinkStore, SQLLinkStore]) -> None:
    a, b = replicas
    started, _ = await start(a, await a.create("crm", ALICE))
    results: list[StartedLink | None] = [None] * RACERS

    async def take(index: int) -> None:
        results[index] = await (a if index % 2 else b).take_by_state(started.state)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            for index in range(RACERS):
                group.start_soon(take, index)
    assert [result for result in results if result is not None] == [started]


async def test_links_expire_on_the_wall_clock(replicas: tuple[SQLLinkStore, SQLLinkStore], clock: Clock) -> None:
    a, b = replicas
    link = await a.create("crm", ALICE)
    started, _ = await start(a, link)
    clock.now += LINK_SECONDS
    assert await b.get(link.id) is None
    assert await b.mark_started(link) is None
    assert await b.take_by_state(started.state) is None


async def test_expired_links_are_purged(
    db: Database, replicas: tuple[SQLLinkStore, SQLLinkStore], clock: Clock
) -> None:
    a, _ = replicas
    old = await a.create("crm", ALICE)
    clock.now += LINK_SECONDS + 1
    await a.create("crm", BOB)
    async with db.read() as connection:
        ids = set((await connection.execute(select(UpstreamLinkRow.id))).scalars())
    assert old.id not in ids
    assert len(ids) == 1


async def test_the_cap_is_per_principal(replicas: tuple[SQLLinkStore, SQLLinkStore], clock: Clock) -> None:
    a, b = replicas
    bobs = await b.create("crm", BOB)
    alices = []
    for _ in range(MAX_LINKS_PER_PRINCIPAL + 3):
        clock.now += 1
        alices.append(await a.create("crm", ALICE))
    # Alice's oldest links made room for her newest; Bob's link is untouched.
    assert await a.get(bobs.id) == bobs
    assert [await a.get(link.id) is not None for link in alices] == [False] * 3 + [True] * MAX_LINKS_PER_PRINCIPAL


async def test_unknown_ids_and_states_find_nothing(replicas: tuple[SQLLinkStore, SQLLinkStore]) -> None:
    a, _ = replicas
    ghost = PendingLink("no-such-link", "crm", ALICE, "token")
    assert await a.get("no-such-link") is None
    assert await a.mark_started(ghost) is None
    assert await a.take_by_state("no-such-state") is None


async def test_a_verifier_moved_to_another_link_does_not_open(
    db: Database, replicas: tuple[SQLLinkStore, SQLLinkStore]
) -> None:
    a, _ = replicas
    first, _ = await start(a, await a.create("crm", ALICE))
    second, _ = await start(a, await a.create("crm", ALICE))
    async with db.transaction() as connection:
        blob = (
            await connection.execute(select(UpstreamLinkRow.verifier).where(UpstreamLinkRow.id == first.id))
        ).scalar_one()
        await connection.execute(update(UpstreamLinkRow).where(UpstreamLinkRow.id == second.id).values(verifier=blob))
    assert await a.take_by_state(second.state) is None
