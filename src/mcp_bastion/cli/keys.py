"""``mcp-bastion keys``: the authorization server's token-signing keys (``oauth.signingkeys``).

``rotate`` makes a new key current; running gateways start signing with it within the key ring's refresh
interval, and the previous key stays in the JWKS until every token it can have signed has expired.
``rotate --revoke-previous`` is for a leaked key: previous keys are deleted at once, and every token they
signed stops verifying as each gateway refreshes. ``list`` shows the keys without key material.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from mcp_bastion.cli.users import ConfigOption, console, run_with_database, when
from mcp_bastion.oauth.signingkeys import SigningKeyInfo, list_keys
from mcp_bastion.settings import Settings
from mcp_bastion.storage.db import Database
from mcp_bastion.web import key_ring, load_kek, open_vault

app = typer.Typer(no_args_is_help=True, help="Token-signing keys of the built-in authorization server.")


@app.command()
def rotate(
    config: ConfigOption = None,
    revoke_previous: Annotated[
        bool,
        typer.Option("--revoke-previous", help="A key leaked: delete previous keys now; their tokens stop working."),
    ] = False,
) -> None:
    """Make a new signing key current; the previous one retires (published until its tokens expire)."""

    async def command(db: Database, settings: Settings) -> tuple[str, float]:
        vault = open_vault(settings)
        await load_kek(vault)
        ring = key_ring(db, vault, settings)
        return await ring.rotate(revoke_previous=revoke_previous), ring.retire_window

    kid, window = run_with_database(config, command)
    typer.echo(f"new signing key {kid}")
    if revoke_previous:
        typer.echo("previous keys deleted: tokens they signed are refused once each gateway refreshes")
    else:
        typer.echo(f"previous keys stay in the JWKS for {window:.0f} s")


@app.command("list")
def list_signing_keys(config: ConfigOption = None) -> None:
    """Show the stored signing keys (never their private halves)."""

    async def command(db: Database, _: Settings) -> list[SigningKeyInfo]:
        return await list_keys(db)

    keys = run_with_database(config, command)
    if not keys:
        typer.echo("no signing keys yet (the gateway creates one when it starts)")
        return
    table = Table("kid", "alg", "state", "created", "retired", "leaves JWKS")
    for info in keys:
        state = "current" if info.retired_at is None else "retired"
        retired = "-" if info.retired_at is None else when(info.retired_at)
        expires = "-" if info.expires_at is None else when(info.expires_at)
        table.add_row(info.kid, info.alg, state, when(info.created_at), retired, expires)
    console().print(table)
