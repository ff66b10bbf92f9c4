"""Approve a quarantined item the way an administrator does: ``mcp-bastion pins approve SERVER NAME``.

    await approve_pin(gw, state_dir, "fetch", "fetch")

The CLI runs in a worker thread (it opens the state database with its own event loop); the running
gateway is then told to re-read its pins at once instead of within ``REFRESH_SECONDS``.
"""

from __future__ import annotations

from pathlib import Path

import anyio
from typer.testing import CliRunner

from mcp_bastion.cli.main import app
from tests.e2e.gateway import RunningGateway


def pins_cli(state_dir: Path, server: str, *args: str) -> str:
    """Run ``mcp-bastion pins ARGS`` against ``state_dir`` (a config naming ``server``); its output."""
    config = state_dir.parent / f"pins-{server}.toml"
    config.write_text(
        f'[server]\nstate_dir = "{state_dir}"\n[upstreams.{server}]\nurl = "https://{server}.internal/mcp"\n'
    )
    result = CliRunner().invoke(app, ["pins", *args, "-c", str(config)])
    assert result.exit_code == 0, result.output
    return result.output


async def approve_pin(gw: RunningGateway, state_dir: Path, server: str, name: str) -> None:
    """Approve the quarantined ``name`` of ``server`` (the CLI fails the test if it is not quarantined)."""
    await anyio.to_thread.run_sync(pins_cli, state_dir, server, "approve", server, name)
    pins = gw.gateway.pins
    assert pins is not None
    await pins.load()
