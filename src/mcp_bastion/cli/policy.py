"""``mcp-bastion policy``: validate policy files, run policy test tables, print the schema.

``validate`` compiles the configured files (or the ones named) against the schema exactly as the gateway
does at startup and on reload. ``test FILE`` runs a table of cases (``policy.cases``) through the same
authorizer the gateway uses and exits 1 if any case disagrees. ``schema`` prints the Cedar schema with
the configured arguments, for editors and for ``cedar validate``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mcp_bastion.cli.users import ConfigOption, console
from mcp_bastion.errors import ConfigError
from mcp_bastion.policy.authorizer import Authorizer
from mcp_bastion.policy.cases import load_cases, run_cases
from mcp_bastion.policy.catalog import ToolCatalog
from mcp_bastion.policy.engine import PolicyEngine, PolicyError
from mcp_bastion.policy.schema import schema_text
from mcp_bastion.policy.store import PolicyStore, load_engine
from mcp_bastion.settings import Settings

app = typer.Typer(no_args_is_help=True, help="Cedar policies: validate, test, show the schema.")

FilesOption = Annotated[
    list[Path] | None, typer.Option("--policy", "-p", help="Policy file (repeatable); default: policy.files.")
]


def _settings(config: Path | None) -> Settings:
    from mcp_bastion.cli.main import _settings as load  # at call time: cli.main imports this module

    return load(config)


def _engine(settings: Settings, files: list[Path] | None) -> PolicyEngine:
    try:
        return load_engine(files or list(settings.policy.files), settings.policy.arguments)
    except PolicyError as exc:
        typer.echo(f"policy error: {exc.detail}", err=True)
        raise typer.Exit(2) from exc


@app.command()
def validate(config: ConfigOption = None, policy: FilesOption = None) -> None:
    """Check that the policy files parse and validate against the schema."""
    settings = _settings(config)
    engine = _engine(settings, policy)
    if engine.count == 0:
        typer.echo("WARNING: no policies: every call would be denied")
    typer.echo(f"ok: policy {engine.version}: {engine.count} policies")


@app.command("test")
def run_table(
    cases: Annotated[Path, typer.Argument(help="TOML table of [[case]]s (see `mcp_bastion.policy.cases`).")],
    config: ConfigOption = None,
    policy: FilesOption = None,
) -> None:
    """Run a table of principal/action/resource/context cases against the policy; exit 1 on any mismatch."""
    settings = _settings(config)
    files = policy or list(settings.policy.files)
    try:
        store = PolicyStore(files, settings.policy.arguments, watch=False)
        table_cases = load_cases(cases)
    except ConfigError as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        raise typer.Exit(2) from exc
    catalog = ToolCatalog.from_settings(settings.upstreams)
    try:
        results = run_cases(table_cases, Authorizer(store, catalog, settings.policy.arguments))
    except ConfigError as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        raise typer.Exit(2) from exc
    table = Table("case", "expected", "got", "listed", "decided by", "")
    for result in results:
        listed = "-" if result.listed_got is None else str(result.listed_got).lower()
        if result.listed_expected is not None and result.listed_expected != result.listed_got:
            listed += f" (expected {str(result.listed_expected).lower()})"
        mark = "ok" if result.passed else "FAIL"
        table.add_row(result.name, result.expected, result.got, listed, ", ".join(result.policies) or "-", mark)
    console().print(table)
    failed = sum(not result.passed for result in results)
    typer.echo(f"{len(results) - failed} passed, {failed} failed")
    if failed:
        raise typer.Exit(1)


@app.command()
def schema(config: ConfigOption = None) -> None:
    """Print the Cedar schema policies are validated against (with the configured arguments)."""
    settings = _settings(config)
    typer.echo(schema_text(settings.policy.arguments))
