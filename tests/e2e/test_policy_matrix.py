"""End to end: the shipped demo policy's table (``demo/policies/demo-cases.toml``) through the real gateway.

Every case of the table that ``mcp-bastion policy test`` checks is replayed here with the real ``mcp``
client against the real demo server behind the gateway, in both protocol eras: calls must be allowed or
refused exactly as the table says (policy denial: a JSON-RPC error the model can read; missing scope: 403
with ``WWW-Authenticate: Bearer error="insufficient_scope"``; an unknown tool: invalid params), and
``tools/list`` must show exactly the tools the table marks as listed. The same table through the CLI is
in ``tests/cli/test_policy.py``: one source of truth, checked both ways.
"""

from __future__ import annotations

import sys
import tomllib
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client

from mcp_bastion.cli.demo import DEMO_ARGUMENTS, DEMO_POLICY, SCOPES
from tests.e2e.gateway import RunningGateway, running_gateway

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

CASES = DEMO_POLICY.parent / "demo-cases.toml"
NO_LIMITS = {"per_user": None, "per_client": None, "per_tool": None}


def policy_section(files: list[Path] | None = None) -> dict[str, object]:
    return {
        "files": [str(path) for path in (files or [DEMO_POLICY])],
        "arguments": DEMO_ARGUMENTS,
        "rate_limits": NO_LIMITS,
    }


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    upstream = {"command": [sys.executable, "-m", "mcp_bastion.demo.customers", "--stdio"], "scopes": SCOPES}
    async with running_gateway(tmp_path, {"customers": upstream}, policy=policy_section()) as running:
        yield running


def table() -> list[dict[str, object]]:
    cases: list[dict[str, object]] = tomllib.loads(CASES.read_text())["case"]
    return [case for case in cases if case["action"] != "grant_scope"]  # the grants: test_scope_grants below


def token_for(gw: RunningGateway, case: dict[str, object]) -> str:
    signer = gw.gateway.local_issuer
    assert signer is not None
    extra = {"roles": case.get("roles", []), "preferred_username": case["user"]}
    scopes = [str(scope) for scope in case.get("scopes", [])]  # type: ignore[attr-defined]
    return signer.mint(str(case["user"]), gw.url("customers"), scope=scopes, client_id="matrix", extra=extra)


async def outcome(client: Client, case: dict[str, object]) -> str:
    action = case["action"]
    arguments = case.get("arguments", {})
    try:
        if action == "tools/call":
            await client.call_tool(str(case["tool"]), arguments)  # type: ignore[arg-type]
        elif action == "resources/read":
            await client.read_resource(str(case["uri"]))
        elif action == "prompts/get":
            await client.get_prompt(str(case["prompt"]), arguments)  # type: ignore[arg-type]
        elif action == "tools/list":
            await client.list_tools()
        else:
            raise AssertionError(f"no replay for {action}")
    except MCPError as error:
        reason = (error.data or {}).get("reason")
        if error.code == -32001 and reason in ("policy_denied", "insufficient_scope"):
            return str(reason).replace("policy_denied", "deny")
        if error.code in (-32602, -32600):
            return "invalid"
        raise
    return "allow"


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_the_demo_table_through_the_gateway(gw: RunningGateway, mode: str) -> None:
    groups: dict[tuple[object, ...], list[dict[str, object]]] = defaultdict(list)
    for case in table():
        key: tuple[object, ...] = (case["user"], str(case.get("roles")), str(case.get("scopes")))
        groups[key].append(case)
    mismatches: list[tuple[object, ...]] = []
    for cases in groups.values():
        http = gw.http(token_for(gw, cases[0]))
        async with http:
            may_list = all(c["action"] != "tools/list" or c["expect"] == "allow" for c in cases)
            async with Client(streamable_http_client(gw.url("customers"), http_client=http), mode=mode) as client:
                listed = {tool.name for tool in (await client.list_tools()).tools} if may_list else set()
                for case in cases:
                    got = await outcome(client, case)
                    if got != case["expect"]:
                        mismatches.append((case["name"], case["expect"], got))
                    if "listed" in case and (case["tool"] in listed) != case["listed"]:
                        mismatches.append((case["name"], f"listed={case['listed']}", sorted(listed)))
    assert mismatches == []
