"""``mcp-bastion users``: local accounts that log in to the built-in authorization server.

Passwords never appear on the command line (where ``ps`` and shell history would keep them): they are
prompted for twice with hidden input, or read as one line from standard input (``--password-stdin``).
``users list`` never shows hashes. Disabling a user also ends the grants (refresh token families) the
user already holds; access tokens already issued run out within their short lifetime.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, TypeVar

import anyio
import typer
from rich.console import Console
from rich.table import Table

from mcp_bastion.delegation.store import forget_user
from mcp_bastion.errors import ConfigError, Unavailable
from mcp_bastion.identity.users import SQLUserDirectory, UserAdminError, UserInfo, check_password, check_username
from mcp_bastion.oauth.service import OAuthError
from mcp_bastion.settings import Settings
from mcp_bastion.storage.db import Database, default_url, open_database
from mcp_bastion.storage.oauthstore import SQLOAuthStore

app = typer.Typer(no_args_is_help=True, help="Local users of the built-in authorization server.")

# The same option as ``cli.main.ConfigOption``; defined here so ``cli.main`` can import this module at its top.
ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML settings file (MCP_BASTION_* variables override it).")
]
RoleOption = Annotated[list[str] | None, typer.Option("--role", "-r", help="A role; repeat for several.")]
StdinOption = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from standard input (one line), not a prompt.")
]
WeakOption = Annotated[
    bool,
    typer.Option("--allow-weak-password", help="Accept a password shorter than 12 characters. Demos only."),
]

T = TypeVar("T")


def run_with_database(config: Path | None, command: Callable[[Database, Settings], Awaitable[T]]) -> T:
    """Load the settings, open (and migrate) their database, run ``command``; refusals become messages and
    exit codes (1: refused or database unavailable, 2: configuration)."""
    from mcp_bastion.cli.main import _settings  # at call time: cli.main imports this module

    settings = _settings(config)

    async def main() -> T:
        async with open_database(default_url(settings)) as db:
            return await command(db, settings)

    try:
        return anyio.run(main)
    except ConfigError as exc:
        typer.echo(f"configuration error: {exc.detail}", err=True)
        raise typer.Exit(2) from exc
    except Unavailable as exc:
        typer.echo(f"database unavailable: {exc.detail}", err=True)
        raise typer.Exit(1) from exc
    except UserAdminError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    except OAuthError as exc:  # client registration rules (``clients add``)
        typer.echo(f"error: {exc.error}: {exc.description}", err=True)
        raise typer.Exit(1) from exc


def console() -> Console:
    """Rich output; wide when not a terminal so ids are never folded in logs and tests."""
    out = Console()
    if not out.is_terminal:
        out.width = 200
    return out


def when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _read_password(from_stdin: bool, allow_weak: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        check_password(password, allow_short=allow_weak)
    except UserAdminError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    if allow_weak:
        typer.echo("WARNING: --allow-weak-password: short passwords are guessable", err=True)
    return password


def _check_username(username: str) -> None:
    try:
        check_username(username)
    except UserAdminError as exc:  # before prompting for a password that would be thrown away
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


@app.command()
def add(
    username: Annotated[str, typer.Argument(help="1 to 64 of A-Z a-z 0-9 . _ @ -")],
    role: RoleOption = None,
    password_stdin: StdinOption = False,
    allow_weak_password: WeakOption = False,
    config: ConfigOption = None,
) -> None:
    """Create a user (enabled)."""
    _check_username(username)
    password = _read_password(password_stdin, allow_weak_password)

    async def command(db: Database, _: Settings) -> UserInfo:
        directory = SQLUserDirectory(db)
        return await directory.add(username, password, role or (), allow_short_password=allow_weak_password)

    info = run_with_database(config, command)
    typer.echo(f"added user {username} (id {info.id})")


@app.command("list")
def list_users(config: ConfigOption = None) -> None:
    """Show every user (never their password hashes)."""

    async def command(db: Database, _: Settings) -> Sequence[UserInfo]:
        return await SQLUserDirectory(db).list()

    users = run_with_database(config, command)
    if not users:
        typer.echo("no users")
        return
    table = Table("username", "roles", "status", "id", "created", "updated")
    for info in users:
        status = "disabled" if info.disabled else "enabled"
        roles = ", ".join(sorted(info.roles)) or "-"
        table.add_row(info.username, roles, status, info.id, when(info.created_at), when(info.updated_at))
    console().print(table)


@app.command()
def disable(username: str, config: ConfigOption = None) -> None:
    """Stop a user from logging in, end the grants the user holds, and delete their upstream credentials."""

    async def command(db: Database, settings: Settings) -> tuple[int, int]:
        info = await SQLUserDirectory(db).set_disabled(username, True)
        ended = await SQLOAuthStore(db).revoke_all_families(subject=info.id, now=time.time(), reason="user_disabled")
        removed = await forget_user(db, f"{settings.server.base_url}\x1f{info.id}")
        return ended, removed

    ended, removed = run_with_database(config, command)
    typer.echo(f"disabled {username}; ended {ended} grant(s); deleted {removed} upstream credential(s)")


@app.command()
def enable(username: str, config: ConfigOption = None) -> None:
    """Let a disabled user log in again."""

    async def command(db: Database, _: Settings) -> UserInfo:
        return await SQLUserDirectory(db).set_disabled(username, False)

    run_with_database(config, command)
    typer.echo(f"enabled {username}")


@app.command()
def passwd(
    username: str,
    password_stdin: StdinOption = False,
    allow_weak_password: WeakOption = False,
    config: ConfigOption = None,
) -> None:
    """Set a user's password."""
    _check_username(username)
    password = _read_password(password_stdin, allow_weak_password)

    async def command(db: Database, _: Settings) -> UserInfo:
        return await SQLUserDirectory(db).set_password(username, password, allow_short_password=allow_weak_password)

    run_with_database(config, command)
    typer.echo(f"password of {username} changed")


@app.command()
def roles(username: str, role: RoleOption = None, config: ConfigOption = None) -> None:
    """Replace a user's roles (no --role: none)."""

    async def command(db: Database, _: Settings) -> UserInfo:
        return await SQLUserDirectory(db).set_roles(username, role or ())

    info = run_with_database(config, command)
    typer.echo(f"roles of {username}: {', '.join(sorted(info.roles)) or '-'}")


@app.command("revoke-consent")
def revoke_consent(username: str, client_id: str, config: ConfigOption = None) -> None:
    """Withdraw a user's remembered consent for a client, and end the grants made under it.

    The next login through that client asks for consent again.
    """

    async def command(db: Database, _: Settings) -> tuple[int, int]:
        info = await SQLUserDirectory(db).find(username)
        if info is None:
            raise UserAdminError("unknown_user", f"no user {username!r}")
        store = SQLOAuthStore(db)
        now = time.time()
        ended = await store.revoke_families(client_id, info.id, now, "consent_revoked")
        return await store.revoke_consents(info.id, client_id, now), ended

    consents, ended = run_with_database(config, command)
    typer.echo(f"revoked {consents} consent(s) of {username} for {client_id}; ended {ended} grant(s)")
