"""The demo command as a user runs it: a real process, HTTPS with its generated CA, the printed token works,
and nothing works without it."""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import anyio
import httpx2
import pytest

from tests.e2e.test_refusals import MODERN_HEADERS, call
from tests.helpers.procs import child_env

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_demo_serves_with_the_printed_token(tmp_path: Path) -> None:
    port = _free_port()
    command = [sys.executable, "-m", "mcp_bastion", "demo", "--state-dir", str(tmp_path / "state"), "--port", str(port)]
    process = await anyio.open_process(command, env={**os.environ, **child_env()}, stderr=subprocess.STDOUT)
    banner = b""
    try:
        assert process.stdout is not None
        with anyio.fail_after(30):
            while b"Ctrl-C" not in banner:
                banner += await process.stdout.receive()
        text = banner.decode()
        url = re.search(r"MCP endpoint\s+(\S+)", text)
        ca = re.search(r"trust this CA\s+(\S+)", text)
        token = re.search(r"MCP_BASTION_TOKEN=(\S+)", text)
        assert url, text
        assert ca, text
        assert token, text
        assert url.group(1) == f"https://localhost:{port}/mcp/customers"
        context = ssl.create_default_context(cafile=ca.group(1))
        async with httpx2.AsyncClient(verify=context, timeout=10) as http:
            with anyio.fail_after(30):  # the listener may still be coming up after the banner
                while True:
                    try:
                        refused = await http.post(url.group(1), json=call(), headers=MODERN_HEADERS)
                        break
                    except httpx2.ConnectError:
                        await anyio.sleep(0.1)
            served = await http.post(
                url.group(1), json=call(), headers={**MODERN_HEADERS, "authorization": f"Bearer {token.group(1)}"}
            )
        assert refused.status_code == 401
        assert served.status_code == 200, served.text
        assert served.json()["result"]["isError"] is False
        assert (tmp_path / "state" / "audit.jsonl").stat().st_mode & 0o077 == 0
        assert (tmp_path / "state" / "tls" / "server.key").stat().st_mode & 0o077 == 0
    finally:
        process.send_signal(signal.SIGINT)
        with anyio.fail_after(15):
            await process.wait()
