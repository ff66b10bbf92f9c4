"""``mcp-bastion vault``: the key-encryption keys behind every secret the gateway stores.

``status`` shows the KEK versions and how many stored secrets each one wraps. ``rotate`` makes a new KEK
version current and re-wraps every stored secret onto it, online (the gateway keeps serving: older
versions stay available until nothing uses them) and resumable (``rewrap`` finishes an interrupted run).
``rewrap-root`` is for a remote backend after its root key rotated in OpenBao or KMS: the wrapped KEKs are
re-wrapped under the newest root version, so older root versions can be retired.
"""

from __future__ import annotations

import typer
from rich.progress import Progress
from rich.table import Table
from sqlalchemy import func, select

from mcp_bastion.cli.users import ConfigOption, console, run_with_database, when
from mcp_bastion.settings import Settings
from mcp_bastion.storage.db import Database
from mcp_bastion.vault.envelope import Vault
from mcp_bastion.vault.keyfile import LocalKeyFile
from mcp_bastion.vault.remote import WrappedKeyRing
from mcp_bastion.vault.rotation import SEALED, RewrapReport, rewrap_all, status
from mcp_bastion.web import load_kek, open_vault

app = typer.Typer(no_args_is_help=True, help="The vault's key-encryption keys: status, rotation, re-wrapping.")


def _backend_name(vault: Vault) -> str:
    kek = vault.kek
    if isinstance(kek, WrappedKeyRing):
        return kek.wrapper.name
    if isinstance(kek, LocalKeyFile):
        return f"file:{kek.path}"
    return type(kek).__name__


@app.command("status")
def show_status(config: ConfigOption = None) -> None:
    """KEK versions (no key material) and the stored secrets each one wraps."""

    async def command(db: Database, settings: Settings) -> None:
        vault = open_vault(settings)
        await load_kek(vault)
        kek = vault.kek
        assert isinstance(kek, LocalKeyFile | WrappedKeyRing)
        counts = await status(db)
        table = Table("KEK version", "created", "current", *counts)
        for version in kek.versions:
            row = [str(counts[name].get(version.id, 0)) for name in counts]
            table.add_row(version.id, when(version.created_at), "yes" if version.current else "", *row)
        typer.echo(f"backend: {_backend_name(vault)}")
        console().print(table)
        unknown = {kv for c in counts.values() for kv in c} - {v.id for v in kek.versions}
        if unknown:
            typer.echo(f"WARNING: secrets name KEK versions this backend does not hold: {sorted(unknown)}")

    run_with_database(config, command)


async def _rewrap(db: Database, vault: Vault) -> RewrapReport:
    current = vault.kek.current.id
    total = 0
    for column in SEALED:
        async with db.read() as connection:
            total += int((await connection.execute(select(func.count()).select_from(column.key.class_))).scalar_one())
    with Progress(console=console(), transient=True) as bar:
        task = bar.add_task(f"re-wrapping onto {current}", total=total)
        report = await rewrap_all(db, vault, current, progress=lambda n: bar.advance(task, n))
    return report


def _print(report: RewrapReport) -> None:
    typer.echo(
        f"re-wrapped {report.rewrapped}, already current {report.current}, changed meanwhile {report.changed}, "
        f"unreadable (left as they are) {report.unreadable}"
    )
    if report.changed:
        typer.echo("run `mcp-bastion vault rewrap` again to pick up the rows changed meanwhile")


@app.command()
def rotate(config: ConfigOption = None) -> None:
    """Make a new KEK version current and re-wrap every stored secret onto it."""

    async def command(db: Database, settings: Settings) -> RewrapReport:
        vault = open_vault(settings)
        await load_kek(vault)
        kek = vault.kek
        if isinstance(kek, WrappedKeyRing):
            new = await kek.rotate()
        else:
            assert isinstance(kek, LocalKeyFile)
            new = kek.rotate()
        typer.echo(f"new KEK version {new.id} is current")
        return await _rewrap(db, vault)

    _print(run_with_database(config, command))


@app.command()
def rewrap(config: ConfigOption = None) -> None:
    """Finish an interrupted rotation: re-wrap what is not on the current KEK yet."""

    async def command(db: Database, settings: Settings) -> RewrapReport:
        vault = open_vault(settings)
        await load_kek(vault)
        return await _rewrap(db, vault)

    _print(run_with_database(config, command))


@app.command("rewrap-root")
def rewrap_root(config: ConfigOption = None) -> None:
    """After rotating the root key in OpenBao/KMS: re-wrap the KEKs under its newest version."""

    async def command(db: Database, settings: Settings) -> int:
        vault = open_vault(settings)
        kek = vault.kek
        if not isinstance(kek, WrappedKeyRing):
            typer.echo("vault.backend is 'file': there is no remote root key", err=True)
            raise typer.Exit(2)
        await kek.load()
        return await kek.rewrap_root()

    count = run_with_database(config, command)
    typer.echo(f"re-wrapped {count} KEK version(s) under the root key's newest version")
