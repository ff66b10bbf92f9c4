"""A real ``redis-server`` for tests: a free loopback port, no persistence, stopped on exit.

``redis-server`` is a Debian package installed by ``scripts/test`` (``scripts/test-services``): when it is
missing the tests that need it fail (they do not skip).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

START_TIMEOUT: Final = 10.0
"""Seconds redis-server may take to answer PING."""
STOP_TIMEOUT: Final = 5.0


@dataclass
class RedisServer:
    url: str
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _pong(port: int, password: str | None) -> bool:
    command = (f"AUTH {password}\r\n" if password else "") + "PING\r\n"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(command.encode())
            return b"+PONG" in sock.recv(256)
    except OSError:
        return False


@contextmanager
def redis_server(directory: Path, *, password: str | None = None) -> Iterator[RedisServer]:
    """Run redis-server on a free loopback port, without persistence, in ``directory``; stop it on exit."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run scripts/test (it installs it via scripts/test-services)")
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = directory / "redis.log"
    command = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    command += ["--dir", str(directory), "--logfile", str(log), "--daemonize", "no"]
    if password is not None:
        command += ["--requirepass", password]
    server = RedisServer(f"redis://127.0.0.1:{port}/0", subprocess.Popen(command, stdin=subprocess.DEVNULL))
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _pong(port, password):
            if server.process.poll() is not None or time.monotonic() > deadline:
                text = log.read_text(errors="replace") if log.exists() else "(no log)"
                pytest.fail(f"redis-server did not answer PING on port {port}:\n{text[-2000:]}")
            time.sleep(0.05)
        yield server
    finally:
        server.stop()
