"""The ``mcp-bastion`` command: ``serve``, ``token``, ``demo``, ``check-config`` and the groups ``users``,
``clients``, ``keys``, ``policy``, ``vault``, ``credentials``, ``pins``, ``sandbox``."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from mcp_bastion.errors import ConfigError
from mcp_bastion.settings import Settings, load_settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help="mcp-bastion: a security gateway for MCP.")

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML settings file (MCP_BASTION_* variables override it).")
]


def _settings(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        typer.echo(f"configuration error: {exc.detail}", err=True)
        raise typer.Exit(2) from exc


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    # Migrations announce every step at INFO; an operator needs to hear only about problems.
    logging.getLogger("alembic").setLevel(logging.WARNING)


@app.command()
def serve(config: ConfigOption = None, log_level: str = "info") -> None:
    """Run the gateway."""
    from mcp_bastion.cli.serve import serve as run

    _logging(log_level)
    try:
        run(_settings(config))
    except ConfigError as exc:
        typer.echo(f"configuration error: {exc.detail}", err=True)
        raise typer.Exit(2) from exc


@app.command("check-config")
def check_config(config: ConfigOption = None) -> None:
    """Validate the settings and print the weakening options in force."""
    from mcp_bastion.policy.engine import PolicyError
    from mcp_bastion.policy.store import load_engine

    settings = _settings(config)
    for warning in settings.warnings():
        typer.echo(f"WARNING: {warning}")
    try:
        engine = load_engine(settings.policy.files, settings.policy.arguments)
    except PolicyError as exc:
        typer.echo(f"policy error: {exc.detail}", err=True)
        raise typer.Exit(2) from exc
    if engine.count == 0:
        typer.echo("WARNING: no policy (policy.files): every tool call, read and list will be denied")
    else:
        typer.echo(f"ok: policy {engine.version}, {engine.count} policies")
    typer.echo(f"ok: {len(settings.upstreams)} upstream(s): {', '.join(settings.upstreams)}")


@app.command()
def token(
    subject: Annotated[str, typer.Option("--sub", help="The user the token is for.")],
    server: Annotated[str, typer.Option("--server", help="The upstream (endpoint) name the token is for.")],
    config: ConfigOption = None,
    scope: Annotated[str, typer.Option(help="Space-separated scopes.")] = "",
    lifetime: Annotated[int, typer.Option(help="Seconds; at most 3600.", max=3600, min=1)] = 300,
    role: Annotated[list[str] | None, typer.Option("--role", help="A role the token carries (repeatable).")] = None,
) -> None:
    """Mint a short-lived access token from the built-in issuer (operators and tests)."""
    from mcp_bastion.cli.users import run_with_database
    from mcp_bastion.storage.db import Database
    from mcp_bastion.web import mint_token

    settings = _settings(config)
    if server not in settings.upstreams:
        typer.echo(f"unknown server {server!r}; configured: {', '.join(settings.upstreams)}", err=True)
        raise typer.Exit(2)
    if not settings.auth.local_issuer:
        typer.echo("auth.local_issuer is off: tokens come from your identity provider", err=True)
        raise typer.Exit(2)
    settings.server.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    audience = f"{settings.server.base_url}/mcp/{server}"

    async def command(db: Database, settings: Settings) -> str:
        return await mint_token(
            db, settings, subject, audience, scope=scope.split(), lifetime=lifetime, roles=role or ()
        )

    typer.echo(run_with_database(config, command))


@app.command()
def demo(
    state_dir: Annotated[Path, typer.Option(help="Where keys, certificates and the audit log go.")] = Path(
        "state/demo"
    ),
    port: int = 8443,
) -> None:
    """Run the gateway on embedded defaults in front of the bundled 'customers' demo server."""
    from mcp_bastion.cli.demo import run_demo

    _logging("warning")
    try:
        run_demo(state_dir, port)
    except ConfigError as exc:
        typer.echo(f"configuration error: {exc.detail}", err=True)
        raise typer.Exit(2) from exc


def main() -> None:
    app()


def _register_groups() -> None:
    from mcp_bastion.cli import clients, credentials, keys, pins, policy, sandbox, users, vault

    app.add_typer(users.app, name="users")
    app.add_typer(clients.app, name="clients")
    app.add_typer(keys.app, name="keys")
    app.add_typer(policy.app, name="policy")
    app.add_typer(vault.app, name="vault")
    app.add_typer(credentials.app, name="credentials")
    app.add_typer(pins.app, name="pins")
    app.add_typer(sandbox.app, name="sandbox")


_register_groups()
