"""``mcp-bastion sandbox``: what this machine can enforce, and any command run in an upstream's sandbox.

``check`` prints one line per protection (bubblewrap, namespaces, seccomp, Landlock, nftables, process
limit) and exits 1 when strict profiles cannot run here. ``run --upstream NAME -c CONFIG -- CMD...`` runs
CMD in that upstream's profile (``--upstream`` omitted: the default strict profile), its stdin, stdout and
stderr the terminal's, and exits with its status: the way to find out what a server needs.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mcp_bastion.errors import ConfigError
from mcp_bastion.sandbox.check import probe
from mcp_bastion.sandbox.profile import SandboxSettings

if TYPE_CHECKING:
    from mcp_bastion.sandbox.launch import Sandbox

app = typer.Typer(no_args_is_help=True, help="The stdio sandbox: check this machine, run a command in a profile.")


@app.command()
def check() -> None:
    """Which protections this machine supports; exit status 1 if strict profiles cannot run."""
    report = probe()
    for ok, protection, detail in report.lines():
        typer.echo(f"{'ok  ' if ok else 'MISSING'} {protection}: {detail}")
    for gap in report.landlock_gaps(SandboxSettings()):
        typer.echo(f"WARNING: {gap}")
    if not report.strict_ok:
        typer.echo(f"strict sandbox: NOT available: {'; '.join(report.missing_for_strict())}", err=True)
        raise typer.Exit(1)
    typer.echo("strict sandbox: available")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(
    command: Annotated[list[str], typer.Argument(help="The command (after --).")],
    upstream: Annotated[str | None, typer.Option("--upstream", help="Use this upstream's profile and env.")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="TOML settings file.")] = None,
    state_dir: Annotated[Path | None, typer.Option(help="Kept out of the sandbox (default: the config's).")] = None,
) -> None:
    """Run COMMAND in a sandbox profile, attached to this terminal."""
    from mcp_bastion.app import build_sandbox
    from mcp_bastion.settings import load_settings
    from mcp_bastion.upstream.process import child_environment

    try:
        settings = load_settings(config)
        profile, env, cwd = SandboxSettings(), dict[str, str](), None
        if upstream is not None:
            if upstream not in settings.upstreams:
                raise ConfigError(f"no upstream {upstream!r} in the settings")
            chosen = settings.upstreams[upstream]
            profile, env, cwd = chosen.sandbox, dict(chosen.env), chosen.cwd
        if not profile.strict:
            profile = profile.model_copy(update={"mode": "strict"})
        state = state_dir if state_dir is not None else settings.server.state_dir
        sandbox = build_sandbox(upstream or "run", profile, state, None)
        status = asyncio.run(_run(sandbox, command, child_environment(env), cwd))
    except ConfigError as exc:
        typer.echo(f"sandbox: {exc.detail}", err=True)
        raise typer.Exit(2) from exc
    raise typer.Exit(status)


async def _run(sandbox: Sandbox, command: list[str], env: dict[str, str], cwd: Path | None) -> int:
    for warning in await sandbox.check():
        typer.echo(f"WARNING: {warning}", err=True)
    launch = sandbox.prepare(command, env, cwd)
    try:
        process = await asyncio.create_subprocess_exec(
            *launch.argv, env=launch.env, pass_fds=launch.pass_fds, preexec_fn=launch.preexec
        )
        launch.close_fds()
        return await process.wait()
    finally:
        launch.cleanup()
