"""``mcp-bastion credentials``: each user's own credential for an upstream (``upstreams.<name>.auth``).

``set UPSTREAM --user NAME`` stores a secret for a local user (``--subject``/``--issuer`` for users of
another issuer; ``--subject <certificate identity> --issuer mtls`` for an mTLS client). The secret is
read from standard input (one line), never from the command line, where other users of the machine could
see it, and is sealed by the vault at once. ``list`` shows who has one (never the secret), ``remove`` deletes it.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from mcp_bastion.cli.users import ConfigOption, console, run_with_database, when
from mcp_bastion.delegation.store import CredentialInfo, CredentialStore
from mcp_bastion.identity.users import SQLUserDirectory
from mcp_bastion.settings import Settings
from mcp_bastion.storage.db import Database
from mcp_bastion.web import load_kek, open_vault

app = typer.Typer(no_args_is_help=True, help="Users' own credentials for upstream servers (sealed by the vault).")

UserOption = Annotated[str | None, typer.Option("--user", help="A local user's name.")]
SubjectOption = Annotated[str | None, typer.Option("--subject", help="The token subject (users of another issuer).")]
IssuerOption = Annotated[str | None, typer.Option("--issuer", help="With --subject: the issuer (default: ours).")]


async def _principal_key(
    db: Database, settings: Settings, user: str | None, subject: str | None, issuer: str | None
) -> str:
    if (user is None) == (subject is None):
        typer.echo("give exactly one of --user or --subject", err=True)
        raise typer.Exit(2)
    if user is not None:
        info = await SQLUserDirectory(db).find(user)
        if info is None:
            typer.echo(f"no local user {user!r}", err=True)
            raise typer.Exit(1)
        subject, issuer = info.id, settings.server.base_url
    assert subject is not None
    return f"{issuer or settings.server.base_url}\x1f{subject}"


def _store(db: Database, settings: Settings) -> CredentialStore:
    return CredentialStore(db, open_vault(settings))


def _check_upstream(settings: Settings, upstream: str) -> None:
    configured = settings.upstreams.get(upstream)
    if configured is None:
        typer.echo(f"unknown upstream {upstream!r}; configured: {', '.join(settings.upstreams)}", err=True)
        raise typer.Exit(2)
    if configured.auth.mode != "static" or configured.auth.shared_service_account is not None:
        typer.echo(f"note: upstreams.{upstream}.auth does not use per-user credentials (mode static, no shared)")


@app.command("set")
def set_credential(
    upstream: str,
    config: ConfigOption = None,
    user: UserOption = None,
    subject: SubjectOption = None,
    issuer: IssuerOption = None,
) -> None:
    """Store a user's secret for UPSTREAM (read as one line from standard input)."""
    secret = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    if not secret:
        typer.echo("no secret on standard input", err=True)
        raise typer.Exit(2)

    async def command(db: Database, settings: Settings) -> None:
        _check_upstream(settings, upstream)
        key = await _principal_key(db, settings, user, subject, issuer)
        vault = open_vault(settings)
        await load_kek(vault)
        await CredentialStore(db, vault).put(upstream, key, secret.encode("utf-8"))

    run_with_database(config, command)
    typer.echo(f"stored (sealed) for {user or subject} on {upstream}")


@app.command("remove")
def remove_credential(
    upstream: str,
    config: ConfigOption = None,
    user: UserOption = None,
    subject: SubjectOption = None,
    issuer: IssuerOption = None,
) -> None:
    """Delete a user's secret for UPSTREAM (their calls are refused until a new one is set)."""

    async def command(db: Database, settings: Settings) -> bool:
        key = await _principal_key(db, settings, user, subject, issuer)
        return await _store(db, settings).remove(upstream, key)

    if not run_with_database(config, command):
        typer.echo("nothing stored for that user", err=True)
        raise typer.Exit(1)
    typer.echo("removed")


@app.command("list")
def list_credentials(upstream: Annotated[str | None, typer.Argument()] = None, config: ConfigOption = None) -> None:
    """Who has a credential stored (never the secrets)."""

    async def command(db: Database, settings: Settings) -> list[CredentialInfo]:
        return list(await _store(db, settings).list(upstream))

    found = run_with_database(config, command)
    table = Table("upstream", "issuer", "subject", "updated")
    for info in found:
        issuer_part, _, subject_part = info.principal.partition("\x1f")
        table.add_row(info.upstream, issuer_part, subject_part, when(info.updated_at))
    console().print(table)
