"""End to end: a hostile stdio server in the strict sandbox, driven through the gateway by the real client.

Every escape attempt (host secrets, the user's ~/.ssh, the gateway's state directory and key, writes
outside the data directory, the host's loopback services, ptrace, fork and memory bombs, CPU and wall-clock
budgets) fails and is reported, by the server's own answer or by the gateway's error and audit record;
the gateway stays up and a second upstream keeps serving. The demo server works fully inside the sandbox.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import anyio
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import TextContent

from mcp_bastion.sandbox.check import probe
from tests.e2e.gateway import RunningGateway, mcp_session, running_gateway
from tests.helpers.procs import child_env

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.e2e,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not probe().strict_ok, reason="the strict sandbox cannot run here (mcp-bastion sandbox check)"),
]

ESCAPE: Final = str(Path(__file__).resolve().parent / "escape_server.py")
SERVER: Final = str(Path(__file__).resolve().parents[1] / "upstream" / "stdio_server.py")
WAIT: Final = 30


def text(result: object) -> str:
    content = result.content[0]  # type: ignore[attr-defined]
    assert isinstance(content, TextContent)
    return content.text


async def call(session: Client, tool: str, arguments: dict[str, object] | None = None) -> str:
    with anyio.fail_after(WAIT):
        return text(await session.call_tool(tool, arguments or {}))


async def refused(session: Client, tool: str, arguments: dict[str, object] | None = None) -> str:
    with anyio.fail_after(WAIT), pytest.raises(MCPError) as caught:
        await session.call_tool(tool, arguments or {})
    data = caught.value.error.data
    assert isinstance(data, dict)
    return str(data["reason"])


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake home with an SSH key, the gateway's HOME while it runs."""
    path = tmp_path / "home"
    (path / ".ssh").mkdir(parents=True)
    (path / ".ssh" / "id_ed25519").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    monkeypatch.setenv("HOME", str(path))
    return path


@pytest.fixture
async def gw(tmp_path: Path, home: Path) -> AsyncIterator[RunningGateway]:
    profile = {
        "data_dir": "escape",
        "cpu_seconds": 2,
        "call_timeout_seconds": 3,
        "processes": 16,
        "memory_mb": 400,
    }
    upstreams = {
        "escape": {"command": [sys.executable, ESCAPE], "env": child_env(), "sandbox": profile},
        "up": {"command": [sys.executable, SERVER], "env": child_env()},
    }
    async with running_gateway(tmp_path, upstreams) as running:
        yield running


async def test_host_files_are_not_there(gw: RunningGateway, home: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    keys = [state / "vault.key", *sorted((state / "tls").iterdir())]  # the vault's root key, the TLS keys
    assert keys[0].exists()
    async with mcp_session(gw, "escape") as session:
        assert await call(session, "read", {"path": "/etc/shadow"}) == "denied ENOENT"
        passwd = await call(session, "read", {"path": "/etc/passwd"})
        assert passwd.startswith("ok sandbox:")  # synthetic
        assert "root:" not in passwd
        assert await call(session, "read", {"path": str(home / ".ssh" / "id_ed25519")}) == "denied ENOENT"
        assert await call(session, "listdir", {"path": str(home)}) == "denied ENOENT"
        for key in keys:
            assert await call(session, "read", {"path": str(key)}) == "denied ENOENT"
        # Only the skeleton of the data directory's path is there (bwrap creates a bind's parents).
        assert await call(session, "listdir", {"path": str(state)}) in ("ok sandbox", "denied EACCES")
        assert await call(session, "read", {"path": str(state / "audit.jsonl")}) == "denied ENOENT"
        # The launcher's Landlock layer: even a bound directory's parent cannot be listed.
        assert (await call(session, "listdir", {"path": "/"})).startswith("denied")
        assert (await call(session, "whoami")).startswith("uid=65534 pid=2 ")


async def test_writes_go_only_to_tmp_and_the_data_dir(gw: RunningGateway, tmp_path: Path) -> None:
    data_dir = tmp_path / "state" / "sandbox" / "escape"
    async with mcp_session(gw, "escape") as session:
        assert await call(session, "write", {"path": str(data_dir / "notes.txt")}) == "ok"
        assert await call(session, "write", {"path": "/tmp/scratch"}) == "ok"
        assert await call(session, "write", {"path": "/usr/evil"}) == "denied EROFS"
        # Parents of bound files are created inside the sandbox (its read-only root, or its private /tmp when
        # the checkout lives under the host's /tmp): a write there may succeed but never reaches the host.
        await call(session, "write", {"path": str(tmp_path / "evil")})
        await call(session, "write", {"path": str(Path(ESCAPE).parent / "evil")})
        assert (await call(session, "write", {"path": "/evil"})).startswith("denied")
        assert (await call(session, "write", {"path": sys.executable})).startswith("denied")
    assert (data_dir / "notes.txt").read_text() == "escaped"
    assert oct(data_dir.stat().st_mode & 0o777) == "0o700"
    assert not (tmp_path / "evil").exists()
    assert not (Path(ESCAPE).parent / "evil").exists()


async def test_host_loopback_services_are_unreachable(gw: RunningGateway) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        async with mcp_session(gw, "escape") as session:
            assert await call(session, "connect", {"host": "127.0.0.1", "port": port}) == "denied EPERM"
            assert await call(session, "connect", {"host": "::1", "port": port}) == "denied EPERM"


async def test_ptrace_and_process_memory_are_refused(gw: RunningGateway) -> None:
    async with mcp_session(gw, "escape") as session:
        for pid in (1, os.getpid()):
            assert await call(session, "trace", {"pid": pid}) == "ptrace EPERM, process_vm_readv EPERM"


async def test_fork_and_memory_bombs_hit_their_limits(gw: RunningGateway) -> None:
    async with mcp_session(gw, "escape") as session:
        forked = await call(session, "fork_bomb", {"limit": 200})
        assert forked.startswith("limited after "), forked
        assert forked.endswith("denied EAGAIN"), forked
        assert int(forked.split()[2]) < 16
        assert await call(session, "memory_bomb", {"megabytes": 1024}) == "limited MemoryError"
        assert (await call(session, "memory_bomb", {"megabytes": 16})).startswith("ok")


async def test_cpu_and_wall_clock_budgets_kill_the_server_not_the_gateway(gw: RunningGateway) -> None:
    async with mcp_session(gw, "escape") as session:
        before = await call(session, "whoami")
        assert await refused(session, "spin") == "upstream_crashed"  # RLIMIT_CPU: SIGXCPU, then SIGKILL
        after_cpu = await call(session, "whoami")
        assert after_cpu != before  # restarted, the session replayed
        assert await refused(session, "sleep", {"seconds": 60}) == "upstream_timeout"
        assert await call(session, "whoami") != after_cpu  # killed at the budget, restarted
    async with mcp_session(gw, "up") as other:
        assert await call(other, "echo", {"text": "still here"}) == "still here"
    reasons = {(r.get("target"), r.get("reason")) for r in gw.audit()}
    assert ("spin", "upstream_crashed") in reasons
    assert ("sleep", "upstream_timeout") in reasons


async def test_the_demo_server_works_in_the_sandbox(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "mcp_bastion.demo.customers", "--stdio"]
    async with running_gateway(tmp_path, {"customers": {"command": command, "env": child_env()}}) as gw:
        async with mcp_session(gw, "customers") as session:
            with anyio.fail_after(WAIT):
                tools = {tool.name for tool in (await session.list_tools()).tools}
            assert {"search_customers", "get_customer", "update_customer_email", "export_report"} <= tools
            found = await call(session, "search_customers", {"query": "a"})
            assert found
            customer = await call(session, "get_customer", {"customer_id": "C001"})
            assert "C001" in customer
            report = await call(session, "export_report", {"region": "eu"})
            assert report
