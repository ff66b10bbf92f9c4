"""End to end over a real stdio child: per-user isolation, an upstream that dies mid-request, and the
gateway's own secrets staying out of the child's environment."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import TextContent

from tests.e2e.gateway import RunningGateway, running_gateway
from tests.helpers.procs import child_env

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

SERVER = str(Path(__file__).resolve().parents[1] / "upstream" / "stdio_server.py")


def text(result: object) -> str:
    content = result.content[0]  # type: ignore[attr-defined]
    assert isinstance(content, TextContent)
    return content.text


def client(gw: RunningGateway, subject: str, mode: str) -> tuple[Client, object]:
    http = gw.http(gw.token(subject))
    return Client(streamable_http_client(gw.url("up"), http_client=http), mode=mode, cache=None), http


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_each_user_gets_their_own_child(tmp_path: Path, mode: str) -> None:
    upstream = {"command": [sys.executable, SERVER], "env": child_env()}
    async with running_gateway(tmp_path, {"up": upstream}) as gw:
        pids = {}
        for subject in ("alice", "bob"):
            session, http = client(gw, subject, mode)
            async with http, session:  # type: ignore[attr-defined]
                pids[subject] = text(await session.call_tool("pid", {}))
                assert text(await session.call_tool("pid", {})) == pids[subject]
        assert pids["alice"] != pids["bob"]


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_child_crash_mid_request(tmp_path: Path, mode: str) -> None:
    upstream = {"command": [sys.executable, SERVER], "env": child_env()}
    async with running_gateway(tmp_path, {"up": upstream}) as gw:
        session, http = client(gw, "alice", mode)
        async with http, session:  # type: ignore[attr-defined]
            before = text(await session.call_tool("pid", {}))
            with pytest.raises(MCPError) as crashed:
                await session.call_tool("crash", {})
            assert crashed.value.error.code == -32002  # a clear upstream error, not a hang or a 500
            assert crashed.value.error.data == {"reason": "upstream_crashed"}
            # The supervisor restarted the child (and replayed the handshake): the session goes on.
            after = text(await session.call_tool("pid", {}))
            assert after != before
        crash_record = next(r for r in gw.audit() if r["target"] == "crash")
        assert (crash_record["decision"], crash_record["reason"]) == ("error", "upstream_crashed")


async def test_gateway_environment_is_not_inherited(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_BASTION_TEST_SECRET", "hunter2")
    upstream = {"command": [sys.executable, SERVER], "env": {**child_env(), "DECLARED": "yes"}}
    async with running_gateway(tmp_path, {"up": upstream}) as gw:
        session, http = client(gw, "alice", "auto")
        async with http, session:  # type: ignore[attr-defined]
            names = set(text(await session.call_tool("env", {})).split(","))
    assert "DECLARED" in names
    assert "MCP_BASTION_TEST_SECRET" not in names
    assert "MCP_BASTION_TEST_SECRET" in os.environ
