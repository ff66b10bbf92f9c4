"""``mcp-bastion pins``: the definitions the gateway holds servers to (``integrity.pins``).

``list`` shows every pin (tools, prompts, resources, resource templates), which are quarantined and why;
``diff SERVER NAME`` shows what changed between the pinned definition and the one the server sends now,
or what the definition scan found; ``approve`` makes the new definition the pin (or releases a new,
flagged or shadowing item); ``reject`` drops the change (the item stays quarantined while the server keeps
sending it). ``--kind`` picks prompts/resources/templates (tools by default; a resource's name is its URI).
Running gateways pick the decision up within seconds.
"""

from __future__ import annotations

import difflib
from typing import Annotated

import orjson
import typer
from rich.table import Table

from mcp_bastion.cli.users import ConfigOption, console, run_with_database, when
from mcp_bastion.integrity.pins import Kind, Pin, approve, list_pins, reject
from mcp_bastion.settings import Settings
from mcp_bastion.storage.db import Database

app = typer.Typer(no_args_is_help=True, help="Pinned definitions: list, diff, approve, reject.")
KindOption = Annotated[Kind, typer.Option("--kind", help="tool, prompt, resource or template")]


@app.command("list")
def list_command(server: str | None = None, config: ConfigOption = None) -> None:
    """Every pinned item, its state and why it is quarantined."""

    async def command(db: Database, _: Settings) -> list[Pin]:
        return await list_pins(db, server)

    table = Table("server", "kind", "name", "state", "why", "first seen", "changed")
    for pin in run_with_database(config, command):
        state = pin.state + (" (change waiting)" if pin.pending is not None else "")
        changed = when(pin.changed_at) if pin.changed_at is not None else "-"
        why = (pin.reason or "") if pin.state == "quarantined" else ""
        table.add_row(pin.server, pin.kind, pin.name, state, why, when(pin.first_seen), changed)
    console().print(table)


def _lines(definition: object) -> list[str]:
    return orjson.dumps(definition, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode().splitlines()


@app.command()
def diff(server: str, tool: str, kind: KindOption = "tool", config: ConfigOption = None) -> None:
    """What changed: the pinned definition against the one the server sends now, and what the scan found."""

    async def command(db: Database, _: Settings) -> list[Pin]:
        return await list_pins(db, server, kind)

    pin = next((p for p in run_with_database(config, command) if p.name == tool), None)
    if pin is None:
        typer.echo(f"no pin for {kind} {tool!r} of {server!r}", err=True)
        raise typer.Exit(1)
    for finding in pin.findings:
        typer.echo(f"finding: {finding}")
    if pin.pending is None:
        typer.echo("no change waiting" + (f" (quarantined: {pin.reason})" if pin.state == "quarantined" else ""))
        return
    lines = difflib.unified_diff(_lines(pin.definition), _lines(pin.pending), "pinned", "now", lineterm="")
    typer.echo("\n".join(lines))


@app.command("approve")
def approve_command(server: str, tool: str, kind: KindOption = "tool", config: ConfigOption = None) -> None:
    """Accept the item's current definition: it becomes the pin and the item is usable again."""

    async def command(db: Database, _: Settings) -> bool:
        return await approve(db, server, tool, kind)

    if not run_with_database(config, command):
        typer.echo(f"{tool!r} of {server!r} is not quarantined", err=True)
        raise typer.Exit(1)
    typer.echo(f"approved {tool} of {server}")


@app.command("reject")
def reject_command(server: str, tool: str, kind: KindOption = "tool", config: ConfigOption = None) -> None:
    """Refuse the change: the pin stays, and the item stays quarantined while the server sends the change."""

    async def command(db: Database, _: Settings) -> bool:
        return await reject(db, server, tool, kind)

    if not run_with_database(config, command):
        typer.echo(f"no change waiting for {tool!r} of {server!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"rejected the change of {tool} of {server}")
