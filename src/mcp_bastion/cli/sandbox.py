"""``mcp-bastion sandbox``: what this machine can enforce, and any command run in a sandbox profile.

``check`` prints one line per protection (bubblewrap, namespaces, seccomp, Landlock, process limit) and
exits 1 when strict profiles cannot run here; ``--profile NAME -c CONFIG`` words its warnings for that
profile. ``run --profile NAME -c CONFIG -- CMD...`` runs CMD in that profile (built-in or
``[sandbox.profiles.<name>]``); ``run --upstream NAME -c CONFIG -- CMD...`` in that upstream's resolved profile,
with its env and cwd; with neither, in the default strict profile. CMD's stdin, stdout and stderr are the
terminal's and ``run`` exits with its status: the way to find out what a server needs.

``run`` always confines: it exists to debug the sandbox. ``--profile dangerously_disabled`` is refused (run
the command directly instead), and an upstream whose sandbox is ``dangerously_disabled`` is run strict with
its other settings, which ``run`` says on stderr.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mcp_bastion.cli.users import ConfigOption
from mcp_bastion.errors import ConfigError
from mcp_bastion.sandbox.check import probe
from mcp_bastion.sandbox.profile import DEFAULT_PROFILE, SandboxSettings

if TYPE_CHECKING:
    from mcp_bastion.sandbox.launch import Sandbox

app = typer.Typer(no_args_is_help=True, help="The stdio sandbox: check this machine, run a command in a profile.")

ProfileOption = Annotated[
    str | None,
    typer.Option(
        "--profile",
        help="Word the warnings for this profile: strict (the default) or one under sandbox.profiles in the config.",
    ),
]


@app.command()
def check(profile: ProfileOption = None, config: ConfigOption = None) -> None:
    """Which protections this machine supports; exit status 1 if strict profiles cannot run."""
    from mcp_bastion.settings import load_settings

    try:  # the config is read only for a named profile: the machine check needs none
        chosen = load_settings(config).sandbox.named(profile) if profile is not None else SandboxSettings()
    except ConfigError as exc:
        typer.echo(f"sandbox: {exc.detail}", err=True)
        raise typer.Exit(2) from exc
    report = probe()
    for ok, protection, detail in report.lines():
        typer.echo(f"{'ok  ' if ok else 'MISSING'} {protection}: {detail}")
    if chosen.strict:
        for gap in report.landlock_gaps(chosen):
            typer.echo(f"WARNING: {gap}")
    else:
        typer.echo(f"WARNING: profile {profile}: the server runs unconfined, with the gateway's rights")
    if not report.strict_ok:
        typer.echo(f"strict sandbox: NOT available: {'; '.join(report.missing_for_strict())}", err=True)
        raise typer.Exit(1)
    typer.echo("strict sandbox: available")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(
    command: Annotated[list[str], typer.Argument(help="The command (after --).")],
    profile: Annotated[
        str | None,
        typer.Option(
            "--profile",
            help="Run in this profile: strict (the default) or one under sandbox.profiles in the config. "
            "dangerously_disabled is refused: run exists to debug the sandbox.",
        ),
    ] = None,
    upstream: Annotated[
        str | None,
        typer.Option(
            "--upstream",
            help="Run in this upstream's profile, with its env and cwd (a dangerously_disabled one runs strict).",
        ),
    ] = None,
    config: ConfigOption = None,
    state_dir: Annotated[Path | None, typer.Option(help="Kept out of the sandbox (default: the config's).")] = None,
) -> None:
    """Run COMMAND in a sandbox profile, attached to this terminal; always confined."""
    from mcp_bastion.app import build_sandbox
    from mcp_bastion.settings import load_settings
    from mcp_bastion.upstream.process import child_environment

    try:
        if profile is not None and upstream is not None:
            raise ConfigError("give --profile or --upstream, not both")
        settings = load_settings(config)
        env, cwd = dict[str, str](), None
        if upstream is None:
            chosen = settings.sandbox.named(profile or DEFAULT_PROFILE)
            if not chosen.strict:
                raise ConfigError(
                    f"--profile {profile} runs unconfined, and sandbox run is for debugging a sandbox: run the "
                    "command directly, or choose a confining profile"
                )
        else:
            if upstream not in settings.upstreams:
                raise ConfigError(f"no upstream {upstream!r} in the settings")
            server = settings.upstreams[upstream]
            if server.command is None:
                raise ConfigError(f"upstream {upstream!r} is not a stdio server (it has a url): it has no sandbox")
            chosen, env, cwd = server.sandbox, dict(server.env), server.cwd
            if not chosen.strict:
                typer.echo(
                    f'sandbox: upstreams.{upstream}.sandbox is "dangerously_disabled"; running it strict, with '
                    "its other settings",
                    err=True,
                )
                chosen = chosen.model_copy(update={"mode": "strict"})
        state = state_dir if state_dir is not None else settings.server.state_dir
        where = f"upstreams.{upstream}" if upstream is not None else f"sandbox profile {profile or DEFAULT_PROFILE!r}"
        sandbox = build_sandbox(upstream or "run", chosen, state, None, where=where)
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
        process = await asyncio.create_subprocess_exec(*launch.argv, env=launch.env, pass_fds=launch.pass_fds)
        launch.close_fds()
        return await process.wait()
    finally:
        launch.cleanup()
