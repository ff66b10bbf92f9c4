"""The official MCP conformance suite (npm @modelcontextprotocol/conformance), direct and through the gateway.

The gateway must pass every server scenario the upstream passes on its own. Scenarios run in Node (a
subprocess) against the gateway serving from this test's event loop, so they run in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from tests.conformance.run import SetupError, run_scenarios
from tests.e2e.gateway import running_gateway

pytestmark = [pytest.mark.anyio, pytest.mark.e2e, pytest.mark.conformance]

UPSTREAM = Path(__file__).resolve().parents[1] / "conformance" / "upstream.py"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def conformance_upstream() -> AsyncIterator[str]:
    port = _free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(UPSTREAM), "--port", str(port), stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        with anyio.fail_after(30):
            line = await process.stdout.readline()
        assert line.strip() == b"READY", line
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        with anyio.fail_after(10):
            await process.wait()


async def test_gateway_passes_what_the_upstream_passes(tmp_path: Path) -> None:
    async with conformance_upstream() as upstream_url:
        try:
            direct = await anyio.to_thread.run_sync(lambda: run_scenarios(upstream_url, None))
        except SetupError as exc:
            pytest.fail(f"conformance suite not installed (scripts/conformance-setup): {exc}")
        upstreams = {"conformance": {"url": upstream_url, "allow_insecure_http": True}}
        # The dns-rebinding scenario sends `Origin: http://127.0.0.1:<port>` with its legitimate request.
        async with running_gateway(tmp_path, upstreams, extra_origins=lambda port: [f"http://127.0.0.1:{port}"]) as gw:
            token = gw.token("conformance-user", server="conformance", lifetime=3600)
            url = gw.url("conformance")
            assert gw.ca_file is not None
            ca = str(gw.ca_file)
            through = await anyio.to_thread.run_sync(
                lambda: run_scenarios(url, None, headers={"Authorization": f"Bearer {token}"}, ca_file=ca)
            )
            records = gw.audit()
    # It really went through the gate: the calls are on the audit log under the token's user.
    assert any(r["method"] == "tools/call" and r["principal"] == "conformance-user" for r in records)
    assert any(r["reason"] == "host_not_allowed" for r in records)  # the dns-rebinding scenario's probe
    passed_direct = {name for name, result in direct.items() if result.passed}
    passed_through = {name for name, result in through.items() if result.passed}
    assert len(passed_direct) >= 30, {n: r.detail for n, r in direct.items() if not r.passed}
    lost = {name: through[name].detail for name in passed_direct - passed_through}
    assert not lost, lost
    print(f"conformance: {len(passed_direct)}/{len(direct)} direct, {len(passed_through)}/{len(through)} through")
