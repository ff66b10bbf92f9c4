"""``mcp-bastion clients``: OAuth clients registered by the operator (``kind = "static"``).

A client is validated by the same rules as dynamic registration (``oauth.registration``): exact redirect
URIs (https, http on loopback, or a reverse-domain private-use scheme), ``code`` with PKCE, and for a
confidential client a 256-bit secret that is printed once and stored only as its SHA-256 digest.
Removing a client also ends the grants (refresh token families) issued to it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Annotated

import typer
from rich.table import Table

from mcp_bastion.cli.users import ConfigOption, console, run_with_database, when
from mcp_bastion.oauth.registration import TOKEN_EXCHANGE, Registration, register
from mcp_bastion.oauth.store import ClientRecord
from mcp_bastion.settings import Settings
from mcp_bastion.storage.db import Database
from mcp_bastion.storage.oauthstore import SQLOAuthStore

app = typer.Typer(no_args_is_help=True, help="OAuth clients registered by the operator.")


def known_scopes(settings: Settings) -> frozenset[str]:
    """Every scope some upstream offers: what a client may be limited to."""
    return frozenset(scope for upstream in settings.upstreams.values() for scope in upstream.scopes)


@app.command()
def add(
    name: Annotated[str, typer.Option("--name", help="The client's name, shown on the consent page.")],
    redirect_uri: Annotated[
        list[str] | None, typer.Option("--redirect-uri", help="An exact redirect URI; repeat for several.")
    ] = None,
    confidential: Annotated[
        bool, typer.Option("--confidential", help="Issue a client secret (client_secret_basic); default: public.")
    ] = False,
    client_credentials: Annotated[
        bool, typer.Option("--client-credentials", help="Allow the client_credentials grant (needs --confidential).")
    ] = False,
    token_exchange: Annotated[
        bool, typer.Option("--token-exchange", help="Allow RFC 8693 token exchange (a gateway; needs --confidential).")
    ] = False,
    scope: Annotated[
        str | None, typer.Option("--scope", help="Space-separated scopes the client may ask for (default: any).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Register a client; prints its client_id and, for a confidential client, its secret (once)."""
    grants = ["authorization_code", "refresh_token"] if redirect_uri else []
    if client_credentials:
        grants.append("client_credentials")
    if token_exchange:
        grants.append(TOKEN_EXCHANGE)
    if not grants:
        typer.echo("error: give --redirect-uri (users log in), --client-credentials or --token-exchange", err=True)
        raise typer.Exit(1)
    body: dict[str, object] = {
        "client_name": name,
        "redirect_uris": list(redirect_uri or []),
        "grant_types": grants,
        "token_endpoint_auth_method": "client_secret_basic" if confidential else "none",
    }
    if scope is not None:
        body["scope"] = scope

    async def command(db: Database, settings: Settings) -> Registration:
        registration = register(body, known_scopes=known_scopes(settings), now=time.time(), kind="static")
        await SQLOAuthStore(db).put_client(registration.record)
        return registration

    registration = run_with_database(config, command)
    typer.echo(f"client_id: {registration.record.client_id}")
    if registration.client_secret is not None:
        typer.echo(f"client_secret: {registration.client_secret}")
        typer.echo("The secret is shown only now (the gateway keeps its SHA-256 digest): store it safely.", err=True)


@app.command("list")
def list_clients(config: ConfigOption = None) -> None:
    """Show every client (registered, cached metadata documents, and static ones); never secrets."""

    async def command(db: Database, _: Settings) -> Sequence[ClientRecord]:
        return await SQLOAuthStore(db).list_clients()

    clients = run_with_database(config, command)
    if not clients:
        typer.echo("no clients")
        return
    table = Table("client_id", "name", "kind", "auth", "grants", "redirect URIs", "created")
    for client in clients:
        table.add_row(
            client.client_id,
            client.name,
            client.kind,
            client.auth_method,
            " ".join(sorted(client.grant_types)),
            "\n".join(client.redirect_uris) or "-",
            when(client.created_at),
        )
    console().print(table)


@app.command()
def remove(client_id: str, config: ConfigOption = None) -> None:
    """Remove a client and end every grant issued to it."""

    async def command(db: Database, _: Settings) -> int | None:
        store = SQLOAuthStore(db)
        if not await store.delete_client(client_id):
            return None
        return await store.revoke_all_families(client_id=client_id, now=time.time(), reason="client_removed")

    ended = run_with_database(config, command)
    if ended is None:
        typer.echo(f"error: no client {client_id!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"removed {client_id}; ended {ended} grant(s)")
