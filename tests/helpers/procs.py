"""Run Python modules as child processes in tests: servers that announce `READY <url>`, and stdio servers.

    async with serve_module("mcp_bastion.demo.echo", "--http", "--port", "0") as url:
        async with Client(streamable_http_client(url)) as client: ...

    async with Client(stdio_params("mcp_bastion.demo.echo", "--stdio")) as client: ...

Children run on this interpreter (`sys.executable`) with the source tree these tests import first on
`PYTHONPATH`, so a child runs the same code as the test even when the package is not installed. Their
stderr is inherited, so pytest's fd capture shows it next to a failing test. Every wait is bounded:
a child that prints no READY line in time, or exits before printing one, fails the test with its exit
status; on exit a child gets SIGTERM, then SIGKILL if it has not stopped within `STOP_TIMEOUT`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

import anyio
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream
from mcp.client.stdio import StdioServerParameters

SRC: Final = Path(__file__).resolve().parents[2] / "src"

READY_TIMEOUT: Final = 30.0
"""Seconds a child may take to print `READY <url>`: a cold start imports mcp, starlette and uvicorn."""

STOP_TIMEOUT: Final = 10.0
"""Seconds a child may take to exit after SIGTERM (uvicorn's graceful shutdown) before it is killed."""

MAX_LINE: Final = 64 * 1024
"""Longest stdout line read while waiting for READY; a longer one fails the test instead of buffering."""


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables to merge into a child's environment: `PYTHONPATH` led by `SRC`, plus `extra`."""
    path = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, **(extra or {})}


def stdio_params(module: str, *args: str, env: Mapping[str, str] | None = None) -> StdioServerParameters:
    """Parameters for the SDK's stdio client (`mcp.Client(params)`) that run `python -m module *args`."""
    # The SDK starts stdio children from a minimal environment (HOME, PATH, ...) merged with `env`.
    return StdioServerParameters(command=sys.executable, args=["-m", module, *args], env=child_env(env))


@asynccontextmanager
async def serve_module(
    module: str, *args: str, env: Mapping[str, str] | None = None, ready_timeout: float = READY_TIMEOUT
) -> AsyncIterator[str]:
    """Run `python -m module *args`, wait for `READY <url>` on its stdout and yield the url.

    Lines before the READY line are skipped. On exit the child is terminated, even when the body failed
    or was cancelled.
    """
    command = [sys.executable, "-m", module, *args]
    process = await anyio.open_process(
        command, stdin=subprocess.DEVNULL, stderr=None, env={**os.environ, **child_env(env)}
    )
    try:
        assert process.stdout is not None
        with anyio.fail_after(ready_timeout):
            url = await _read_ready(BufferedByteReceiveStream(process.stdout), module, process)
        yield url
    finally:
        with anyio.CancelScope(shield=True):
            await _stop(process)


async def _read_ready(stdout: BufferedByteReceiveStream, module: str, process: Process) -> str:
    while True:
        try:
            line = (await stdout.receive_until(b"\n", MAX_LINE)).decode().strip()
        except (anyio.IncompleteRead, anyio.EndOfStream):
            status = await process.wait()
            raise RuntimeError(f"{module} exited with status {status} before printing READY") from None
        match line.split(maxsplit=1):
            case ["READY", url]:
                return url
            case _:
                continue


async def _stop(process: Process) -> None:
    if process.returncode is None:
        process.terminate()
        with anyio.move_on_after(STOP_TIMEOUT):
            await process.wait()
        if process.returncode is None:
            process.kill()
    await process.aclose()
