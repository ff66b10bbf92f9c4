"""A real ``moto_server`` (moto's AWS mock as an HTTP server) for tests: a free loopback port, stopped on exit.

``moto_server`` comes with the ``moto[server]`` test extra, in the same bin directory as this interpreter;
when it is missing the tests that need it fail (they do not skip): run ``scripts/test``, which installs it.

moto keeps everything in memory: a stopped server forgets every key, and ``start()`` after ``stop()`` brings
up an empty one on the same port (what a client sees as "the service came back", not "the keys survived").
"""

from __future__ import annotations

import http.client
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

import pytest

from tests.helpers.redis import free_port

START_TIMEOUT: Final = 15.0
"""Seconds moto_server may take to answer HTTP (a cold start imports moto and Flask: ~0.5 s here)."""
STOP_TIMEOUT: Final = 5.0
BINARY: Final = Path(sys.executable).parent / "moto_server"


def _answers(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=0.5)
    try:
        connection.request("GET", "/moto-api/config")
        connection.getresponse().read()
        return True
    except OSError:
        return False
    finally:
        connection.close()


@dataclass
class MotoServer:
    """One moto_server on ``127.0.0.1:port``; ``stop()`` and ``start()`` again keep the port."""

    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.directory / "moto.log"

    def start(self) -> None:
        """Start the server and wait until it answers HTTP; fail the test if it does not in time."""
        if not BINARY.exists():
            pytest.fail(f"{BINARY} is missing: run scripts/test (it installs the test extras, moto[server])")
        assert self.process is None, "moto_server is running already"
        self.directory.mkdir(parents=True, exist_ok=True)
        self._log = self.log.open("ab")
        command = [str(BINARY), "-H", "127.0.0.1", "-p", str(self.port)]
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log)
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                text = self.log.read_text(errors="replace")
                pytest.fail(f"moto_server did not answer on port {self.port}:\n{text[-2000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL) and wait for it; a no-op when it is not running."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT)
        if self._log is not None:
            self._log.close()
            self._log = None


@contextmanager
def moto_server(directory: Path) -> Iterator[MotoServer]:
    """Run moto_server on a free loopback port, logging to ``directory/moto.log``; stop it on exit."""
    server = MotoServer(directory)
    try:
        server.start()
        yield server
    finally:
        server.stop()
