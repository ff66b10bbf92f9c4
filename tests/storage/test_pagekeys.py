"""``storage.pagekeys.load_page_key``: one signing key for the login pages of every replica, on a real SQLite
file and on a throwaway PostgreSQL cluster (skipped where one cannot run).

A second ``Database`` over the same URL stands for another replica (its own engine and pool).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from sqlalchemy import insert, select, update

from mcp_bastion.errors import ConfigError
from mcp_bastion.privatefile import write_atomic
from mcp_bastion.storage.db import Database
from mcp_bastion.storage.models import PageKeyRow
from mcp_bastion.storage.pagekeys import KEY_BYTES, PURPOSE, ROW_ID, load_page_key
from mcp_bastion.vault.envelope import Vault
from mcp_bastion.vault.keyfile import LocalKeyFile

pytestmark = pytest.mark.anyio

RACERS = 8


@pytest.fixture
async def replica(db: Database) -> AsyncIterator[Database]:
    """Another gateway's engine over the same database."""
    other = Database(db.url.render_as_string(hide_password=False))
    try:
        yield other
    finally:
        await other.aclose()


@pytest.fixture
def vault(tmp_path: Path) -> Vault:
    return Vault(LocalKeyFile(tmp_path / "vault.key"))


async def stored_blob(db: Database) -> bytes:
    async with db.read() as connection:
        return bytes((await connection.execute(select(PageKeyRow.key))).scalar_one())


async def test_the_first_start_creates_a_sealed_key(db: Database, vault: Vault) -> None:
    key = await load_page_key(db, vault)
    assert len(key) == KEY_BYTES
    blob = await stored_blob(db)
    assert key not in blob
    assert vault.open(blob, owner=ROW_ID, purpose=PURPOSE) == key


async def test_another_replica_reads_the_same_key(db: Database, replica: Database, vault: Vault) -> None:
    first = await load_page_key(db, vault)
    assert await load_page_key(replica, vault) == first
    assert await load_page_key(db, vault) == first


async def test_replicas_starting_at_once_agree_on_one_key(db: Database, replica: Database, vault: Vault) -> None:
    keys: list[bytes] = [b""] * RACERS

    async def start(index: int) -> None:
        keys[index] = await load_page_key(db if index % 2 else replica, vault)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            for index in range(RACERS):
                group.start_soon(start, index)
    assert len(set(keys)) == 1
    assert keys[0] == vault.open(await stored_blob(db), owner=ROW_ID, purpose=PURPOSE)


async def test_the_legacy_key_file_is_imported(db: Database, vault: Vault, tmp_path: Path) -> None:
    legacy = tmp_path / "pages-session.key"
    old = secrets.token_bytes(KEY_BYTES)
    write_atomic(legacy, old)
    assert await load_page_key(db, vault, legacy=legacy) == old
    assert legacy.exists()  # replicas not yet upgraded still read it
    # Once stored, the database wins over the file.
    write_atomic(legacy, secrets.token_bytes(KEY_BYTES))
    assert await load_page_key(db, vault, legacy=legacy) == old


async def test_a_missing_legacy_file_means_a_new_key(db: Database, vault: Vault, tmp_path: Path) -> None:
    key = await load_page_key(db, vault, legacy=tmp_path / "absent.key")
    assert len(key) == KEY_BYTES


async def test_a_malformed_legacy_file_is_refused(db: Database, vault: Vault, tmp_path: Path) -> None:
    legacy = tmp_path / "pages-session.key"
    write_atomic(legacy, b"short")
    with pytest.raises(ConfigError, match="must hold"):
        await load_page_key(db, vault, legacy=legacy)


async def test_a_blob_sealed_for_another_row_does_not_open(db: Database, vault: Vault) -> None:
    moved = vault.seal(secrets.token_bytes(KEY_BYTES), owner="other-row", purpose=PURPOSE)
    async with db.transaction() as connection:
        await connection.execute(insert(PageKeyRow).values(id=ROW_ID, key=moved, created_at=0.0))
    with pytest.raises(ConfigError, match="cannot be opened"):
        await load_page_key(db, vault)


async def test_another_vault_key_fails_closed(db: Database, vault: Vault, tmp_path: Path) -> None:
    await load_page_key(db, vault)
    before = await stored_blob(db)
    stranger = Vault(LocalKeyFile(tmp_path / "other-vault.key"))
    with pytest.raises(ConfigError, match="cannot be opened"):
        await load_page_key(db, stranger)
    assert await stored_blob(db) == before  # not replaced by a new key


async def test_a_stored_key_of_the_wrong_length_is_refused(db: Database, vault: Vault) -> None:
    await load_page_key(db, vault)
    short = vault.seal(b"short", owner=ROW_ID, purpose=PURPOSE)
    async with db.transaction() as connection:
        await connection.execute(update(PageKeyRow).values(key=short))
    with pytest.raises(ConfigError, match="must hold"):
        await load_page_key(db, vault)
