"""The forwarder (``sandbox/forwarder.py``) as a real child process on 127.0.0.1, in front of a real egress
proxy: bytes and half-closes pass both ways, bad arguments stop it, and it exits when its parent does."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from tests.helpers.procs import child_env
from tests.sandbox.egress_fixtures import BOUND, free_port, proxied_echo, status

pytestmark = pytest.mark.anyio

MODULE = "mcp_bastion.sandbox.forwarder"


async def wait_listening(port: int) -> None:
    with anyio.fail_after(BOUND):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.01)
                continue
            writer.close()
            return


@asynccontextmanager
async def forwarder(socket_path: Path) -> AsyncIterator[int]:
    port = free_port()
    command = [sys.executable, "-I", "-m", MODULE, "--listen", f"127.0.0.1:{port}", "--unix", str(socket_path)]
    env = {**os.environ, **child_env()}
    async with await anyio.open_process(command, env=env, stdin=subprocess.DEVNULL, stdout=None, stderr=None) as child:
        try:
            await wait_listening(port)
            yield port
        finally:
            child.terminate()
            with anyio.fail_after(BOUND):
                await child.wait()


async def test_relays_bytes_and_half_closes_to_the_proxy(tmp_path: Path) -> None:
    async with (
        proxied_echo(tmp_path) as (echo, proxy, audit),
        forwarder(proxy.socket_path()) as port,
    ):
        with anyio.fail_after(BOUND):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n" % echo)
            assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 200 Connection established\r\n\r\n"
            writer.write(b"x" * 200_000)
            writer.write_eof()  # passes through forwarder and proxy to the echo server, which then closes
            assert len(await reader.read(-1)) == 200_000
            writer.close()
            refused = await asyncio.open_connection("127.0.0.1", port)
            refused[1].write(b"CONNECT evil.test:443 HTTP/1.1\r\n\r\n")
            answer = await refused[0].read(-1)
            refused[1].close()
        records = await audit.wait(2)
    assert status(answer) == 403
    assert [(r["decision"], r["bytes_up"], r["bytes_down"]) for r in records] == [
        ("allow", 200_000, 200_000),
        ("deny", 0, 0),
    ]


@pytest.mark.parametrize(
    "arguments",
    [[], ["--listen", "127.0.0.1:3128"], ["--listen", "3128", "--unix", "/x"], ["--listen", "a:1", "--unix"]],
)
def test_bad_arguments_stop_it(arguments: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-I", "-m", MODULE, *arguments],
        capture_output=True,
        text=True,
        timeout=BOUND,
        env={**os.environ, **child_env()},
        check=False,
    )
    assert done.returncode == 2
    assert "usage:" in done.stderr


def test_exits_when_its_parent_does(tmp_path: Path) -> None:
    port = free_port()
    pid_file = tmp_path / "pid"
    # Like the sandbox launcher: start it, wait until it listens, then go (exec the server; here: exit).
    script = f"""
import socket, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-I", "-m", "{MODULE}", "--listen", "127.0.0.1:{port}",
                          "--unix", "{tmp_path / "none.sock"}"])
open("{pid_file}", "w").write(str(child.pid))
while True:
    try:
        socket.create_connection(("127.0.0.1", {port}), timeout=1).close()
        break
    except OSError:
        time.sleep(0.01)
"""
    subprocess.run([sys.executable, "-c", script], env={**os.environ, **child_env()}, timeout=BOUND, check=True)
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + BOUND
    while alive(pid):  # the forwarder checks on its parent every second
        assert time.monotonic() < deadline, "the forwarder outlived its parent"
        time.sleep(0.05)


def alive(pid: int) -> bool:
    """Running, not gone and not a zombie waiting for whoever adopted it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
