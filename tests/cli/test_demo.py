"""The demo command as a user runs it: a real process, HTTPS with its generated CA, the printed token works,
and nothing works without it."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlencode

import anyio
import httpx2
import pytest

from tests.e2e.browserless import log_in_and_consent
from tests.e2e.test_refusals import MODERN_HEADERS, call
from tests.helpers.procs import child_env

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _log_in(http: httpx2.AsyncClient, resource: str, password: str, ca: ssl.SSLContext) -> str:
    base = resource.split("/mcp/")[0]
    redirect = "http://127.0.0.1:9/callback"
    registered = await http.post(
        f"{base}/oauth/register",
        json={"client_name": "demo test", "redirect_uris": [redirect], "token_endpoint_auth_method": "none"},
    )
    assert registered.status_code == 201, registered.text
    client_id = registered.json()["client_id"]
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect,
            "state": "s1",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "resource": resource,
            "scope": "customers.read",
        }
    )
    back = await log_in_and_consent(f"{base}/authorize?{query}", username="alice", password=password, ca=ca)
    assert back.params["state"] == "s1"
    tokens = await http.post(
        f"{base}/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": back.params["code"],
            "redirect_uri": redirect,
            "client_id": client_id,
            "code_verifier": verifier,
            "resource": resource,
        },
    )
    assert tokens.status_code == 200, tokens.text
    return str(tokens.json()["access_token"])


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
        alice = re.search(r"alice\s+password (\S+)", text)
        assert url, text
        assert ca, text
        assert token, text
        assert alice, text
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
            # The real login: register, log in as alice at the pages, consent, exchange the code, call.
            logged_in = await _log_in(http, url.group(1), alice.group(1), context)
            via_login = await http.post(
                url.group(1), json=call(), headers={**MODERN_HEADERS, "authorization": f"Bearer {logged_in}"}
            )
        assert refused.status_code == 401
        assert served.status_code == 200, served.text
        assert served.json()["result"]["isError"] is False
        assert via_login.status_code == 200, via_login.text
        assert (tmp_path / "state" / "audit.jsonl").stat().st_mode & 0o077 == 0
        assert (tmp_path / "state" / "tls" / "server.key").stat().st_mode & 0o077 == 0
    finally:
        process.send_signal(signal.SIGINT)
        with anyio.fail_after(15):
            await process.wait()
