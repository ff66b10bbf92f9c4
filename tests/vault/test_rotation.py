"""KEK rotation over the real database: every stored secret moves to the new KEK, online and resumable,
and the CLI (`mcp-bastion vault status|rotate|rewrap`) does the same for an operator."""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from mcp_bastion.cli.main import app
from mcp_bastion.oauth.signingkeys import SigningKeyRing
from mcp_bastion.settings import load_settings
from mcp_bastion.storage.db import Database, default_url, open_database
from mcp_bastion.storage.models import SigningKeyRow
from mcp_bastion.vault.envelope import Vault
from mcp_bastion.vault.keyfile import LocalKeyFile
from mcp_bastion.vault.rotation import SEALED, rewrap_all, status
from tests.cli.test_commands import config
from tests.storage.support import migrated

pytestmark = pytest.mark.anyio


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with migrated(tmp_path / "bastion.db") as database:
        yield database


async def blobs(db: Database) -> dict[str, bytes]:
    async with db.read() as connection:
        rows = (await connection.execute(select(SigningKeyRow.kid, SigningKeyRow.private_jwk))).all()
    return {kid: bytes(blob) for kid, blob in rows}


async def three_keys(db: Database, vault: Vault) -> SigningKeyRing:
    keys = SigningKeyRing(db, vault, "https://gw.example")
    await keys.load()
    await keys.rotate()
    await keys.rotate()
    return keys


async def test_every_secret_moves_to_the_new_kek_and_still_opens(db: Database, tmp_path: Path) -> None:
    kek = LocalKeyFile(tmp_path / "vault.key")
    vault = Vault(kek)
    keys = await three_keys(db, vault)
    assert (await status(db))["signing keys"] == {"local-1": 3}
    kek.rotate()
    seen: list[int] = []
    report = await rewrap_all(db, vault, "local-2", progress=seen.append)
    assert (report.rewrapped, report.current, report.unreadable, report.changed) == (3, 0, 0, 0)
    assert len(seen) == 3
    assert (await status(db))["signing keys"] == {"local-2": 3}
    await keys.refresh()  # every stored private key opens and checks out (the ring drops any that do not)
    assert len(keys.public_keys().as_jwks()["keys"]) == 3
    again = await rewrap_all(db, vault, "local-2")  # resumable: a second run has nothing left to do
    assert (again.rewrapped, again.current) == (0, 3)


async def test_an_unreadable_secret_is_left_untouched_and_counted(db: Database, tmp_path: Path) -> None:
    kek = LocalKeyFile(tmp_path / "vault.key")
    vault = Vault(kek)
    await three_keys(db, vault)
    before = await blobs(db)
    victim = sorted(before)[0]
    tampered = before[victim][:-1] + bytes([before[victim][-1] ^ 1])
    async with db.transaction() as connection:
        await connection.execute(update(SigningKeyRow).where(SigningKeyRow.kid == victim).values(private_jwk=tampered))
    kek.rotate()
    report = await rewrap_all(db, vault, "local-2", batch=1)  # batches of one: the walk resumes by key
    assert (report.rewrapped, report.unreadable) == (2, 1)
    assert (await blobs(db))[victim] == tampered  # never overwritten: nothing is lost by rotating


async def test_a_row_changed_meanwhile_is_left_to_the_gateway(db: Database, tmp_path: Path) -> None:
    kek = LocalKeyFile(tmp_path / "vault.key")
    vault = Vault(kek)
    await three_keys(db, vault)
    kek.rotate()
    victim = sorted(await blobs(db))[0]
    other = vault.seal(b"{}", owner=victim, purpose="signing-key")

    def owner_while_another_process_writes(kid: str) -> str:
        # Between the walk's read and its write, another process (a gateway) re-seals the row.
        if kid == victim:
            with contextlib.closing(sqlite3.connect(tmp_path / "bastion.db")) as connection:
                connection.execute("UPDATE signing_keys SET private_jwk = ? WHERE kid = ?", (other, kid))
                connection.commit()
        return kid

    racing = dataclasses.replace(SEALED[0], owner=owner_while_another_process_writes)
    report = await rewrap_all(db, vault, "local-2", columns=[racing])
    assert (report.rewrapped, report.changed) == (2, 1)
    assert (await blobs(db))[victim] == other  # the compare-and-swap lost: the other writer's value stays


def test_the_cli_rotates_and_reports(tmp_path: Path) -> None:
    path = config(tmp_path)
    minted = CliRunner().invoke(app, ["token", "-c", str(path), "--sub", "alice", "--server", "customers"])
    assert minted.exit_code == 0, minted.output  # creates the first signing key, sealed by local-1
    before = CliRunner().invoke(app, ["vault", "status", "-c", str(path)])
    assert before.exit_code == 0, before.output
    assert "local-1" in before.output
    rotated = CliRunner().invoke(app, ["vault", "rotate", "-c", str(path)])
    assert rotated.exit_code == 0, rotated.output
    assert "new KEK version local-2 is current" in rotated.output
    assert "re-wrapped 1," in rotated.output

    async def counts() -> dict[str, int]:
        settings = load_settings(path)
        async with open_database(default_url(settings)) as db:
            return dict((await status(db))["signing keys"])

    assert anyio.run(counts) == {"local-2": 1}
    resumed = CliRunner().invoke(app, ["vault", "rewrap", "-c", str(path)])
    assert "re-wrapped 0, already current 1" in resumed.output
