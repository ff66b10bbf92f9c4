"""End to end: the aggregate endpoint ``/mcp`` serving two real stdio MCP servers as one, through the real
gateway, with the real ``mcp`` client (both protocol eras).

``mail`` is honest; ``docs`` also offers ``sеnd_email`` (Cyrillic ``е``) and a tool whose description
shadows ``send_email`` (see ``aggregate_upstream``). The policy permits everything except ``docs``'s
``delete_doc``. Every refusal is tried for real and checked by its reason, in the answer and in the audit.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import encode_header_value
from mcp_types import TextContent, TextResourceContents
from typer.testing import CliRunner

from mcp_bastion.cli.main import app
from tests.e2e.aggregate_upstream import IMITATOR
from tests.e2e.gateway import RunningGateway, running_gateway
from tests.e2e.test_refusals import MODERN_HEADERS, call
from tests.helpers.procs import child_env

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

SERVER = str(Path(__file__).with_name("aggregate_upstream.py"))
POLICY = """
permit (principal, action, resource);
@id("docs-no-delete")
forbid (principal, action == Action::"tools/call", resource == Tool::"docs/delete_doc");
"""
MODES = ["legacy", "auto"]


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    policy = tmp_path / "aggregate.cedar"
    policy.write_text(POLICY)
    upstreams = {name: {"command": [sys.executable, SERVER, name], "env": child_env()} for name in ("mail", "docs")}
    async with running_gateway(
        tmp_path,
        upstreams,
        aggregate={"enabled": True, "servers": ["mail", "docs"]},
        # The description scan would quarantine ``lookup`` first (as ``tool_flagged``, see
        # test_everything_wrong): off here, so these tests see the shadowing defence on its own.
        integrity={"scan_definitions": False},
        policy={"files": [str(policy)], "rate_limits": {"per_user": None, "per_client": None, "per_tool": None}},
    ) as running:
        yield running


def aggregate_url(gw: RunningGateway) -> str:
    return f"{gw.base_url}/mcp"


def aggregate_token(gw: RunningGateway, subject: str = "alice") -> str:
    issuer = gw.gateway.local_issuer
    assert issuer is not None
    return issuer.mint(subject, aggregate_url(gw))


def text(result: object) -> str:
    content = result.content[0]  # type: ignore[attr-defined]
    assert isinstance(content, TextContent)
    return content.text


async def refused(client: Client, name: str, arguments: dict[str, object]) -> dict[str, object]:
    with pytest.raises(MCPError) as error:
        await client.call_tool(name, arguments)
    return {"code": error.value.error.code, **(error.value.error.data or {})}


def pins_cli(tmp_path: Path, *args: str) -> str:
    path = tmp_path / "pins.toml"
    path.write_text(
        f'[server]\nstate_dir = "{tmp_path / "state"}"\n[upstreams.mail]\nurl = "https://mail.internal/mcp"\n'
    )
    result = CliRunner().invoke(app, ["pins", *args, "-c", str(path)])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("mode", MODES)
async def test_one_server_with_namespaced_names_routed_to_the_right_upstream(gw: RunningGateway, mode: str) -> None:
    async with gw.http(aggregate_token(gw)) as http:
        async with Client(streamable_http_client(aggregate_url(gw), http_client=http), mode=mode) as client:
            tools = {tool.name for tool in (await client.list_tools()).tools}
            # Same plain name on both servers is normal; the attackers and the forbidden tool are not shown.
            assert tools == {"mail.search", "docs.search"}
            assert text(await client.call_tool("mail.search", {"query": "q"})) == "mail:search q"
            assert text(await client.call_tool("docs.search", {"query": "q"})) == "docs:search q"
            prompts = {prompt.name for prompt in (await client.list_prompts()).prompts}
            assert prompts == {"mail.summary", "docs.summary"}
            prompt = await client.get_prompt("docs.summary")
            assert isinstance(prompt.messages[0].content, TextContent)
            assert prompt.messages[0].content.text == "docs:summary"
            resources = {str(resource.uri) for resource in (await client.list_resources()).resources}
            assert resources == {"mail://inbox", "docs://readme"}  # URIs unchanged
            templates = (await client.list_resource_templates()).resource_templates
            assert [template.uri_template for template in templates] == ["mail://messages/{id}"]
            for uri, expected in (("docs://readme", "docs:readme"), ("mail://messages/7", "mail:message 7")):
                contents = (await client.read_resource(uri)).contents[0]
                assert isinstance(contents, TextResourceContents)
                assert contents.text == expected
    records = gw.audit()
    routed = [r for r in records if r["method"] == "tools/call" and r["decision"] == "allow"]
    # Each call: one record at the aggregate (its public name) and one at the real server (its own name).
    assert {(r["server"], r["target"]) for r in routed} >= {
        ("*", "docs.search"),
        ("docs", "search"),
        ("*", "mail.search"),
        ("mail", "search"),
    }
    assert all(r["principal"] == "alice" for r in records)


@pytest.mark.parametrize("mode", MODES)
async def test_the_real_servers_policy_applies_in_the_aggregate(gw: RunningGateway, mode: str) -> None:
    async with gw.http(aggregate_token(gw)) as http:
        async with Client(streamable_http_client(aggregate_url(gw), http_client=http), mode=mode) as client:
            assert "docs.delete_doc" not in {tool.name for tool in (await client.list_tools()).tools}
            assert await refused(client, "docs.delete_doc", {"doc": "d1"}) == {
                "code": -32001,
                "reason": "policy_denied",
            }
    record = [r for r in gw.audit() if r["server"] == "docs" and r["target"] == "delete_doc"][-1]
    assert (record["decision"], record["reason"], record["policies"]) == ("deny", "policy_forbid", ["docs-no-delete"])


async def test_shadowing_tools_are_hidden_refused_and_held_until_approved(gw: RunningGateway, tmp_path: Path) -> None:
    async with gw.http(aggregate_token(gw)) as http:
        async with Client(streamable_http_client(aggregate_url(gw), http_client=http), mode="auto") as client:
            listed = {tool.name for tool in (await client.list_tools()).tools}
            assert f"docs.{IMITATOR}" not in listed
            assert "docs.lookup" not in listed  # its description tells the model to misuse send_email
            shadowing = {"code": -32001, "reason": "tool_shadowing"}
            assert await refused(client, f"docs.{IMITATOR}", {"to": "bob@example.com"}) == shadowing
            assert await refused(client, "docs.lookup", {"word": "x"}) == shadowing
            # Both send_email tools were first seen together: the gateway cannot tell the genuine one.
            assert await refused(client, "mail.send_email", {"to": "bob@example.com"}) == shadowing
    listing = await anyio.to_thread.run_sync(pins_cli, tmp_path, "list")
    assert "shadowing" in listing
    await anyio.to_thread.run_sync(pins_cli, tmp_path, "approve", "mail", "send_email")
    pins = gw.gateway.pins
    assert pins is not None
    await pins.load()  # a running gateway re-reads the pins every few seconds
    async with gw.http(aggregate_token(gw)) as http:
        async with Client(streamable_http_client(aggregate_url(gw), http_client=http), mode="auto") as client:
            listed = {tool.name for tool in (await client.list_tools()).tools}
            assert "mail.send_email" in listed
            assert f"docs.{IMITATOR}" not in listed
            assert text(await client.call_tool("mail.send_email", {"to": "bob@example.com"})) == (
                "mail:send_email bob@example.com"
            )
            assert (await refused(client, f"docs.{IMITATOR}", {"to": "bob@example.com"}))["reason"] == "tool_shadowing"
    # The quarantine lives in the pins: the imitator is refused on its own server's endpoint too.
    async with gw.http(gw.token(server="docs")) as http:
        async with Client(streamable_http_client(gw.url("docs"), http_client=http), mode="auto") as client:
            assert IMITATOR not in {tool.name for tool in (await client.list_tools()).tools}
            assert (await refused(client, IMITATOR, {"to": "bob@example.com"}))["reason"] == "tool_shadowing"


async def test_a_call_never_listed_is_reviewed_before_it_is_routed(gw: RunningGateway) -> None:
    name = f"docs.{IMITATOR}"
    async with gw.http(aggregate_token(gw)) as http:
        response = await http.post(
            aggregate_url(gw),
            json=call(name, {"to": "bob@example.com"}),
            headers={**MODERN_HEADERS, "mcp-name": encode_header_value(name)},
        )
    assert response.json()["error"]["data"]["reason"] == "tool_shadowing"
    assert not [r for r in gw.audit() if r["server"] == "docs" and r["method"] == "tools/call"]  # never reached docs


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("nowhere.search", "server_unknown"),
        ("search", "server_unknown"),
        ("mail.", "server_unknown"),
        ("mail.nope", "tool_unknown"),  # a real prefix: mail's own gate refuses the unknown tool
    ],
)
async def test_an_unknown_prefix_or_tool_is_invalid_params(gw: RunningGateway, name: str, reason: str) -> None:
    async with gw.http(aggregate_token(gw)) as http:
        async with Client(streamable_http_client(aggregate_url(gw), http_client=http), mode="auto") as client:
            assert await refused(client, name, {}) == {"code": -32602, "reason": reason}
    routed = [(r["server"], r["target"]) for r in gw.audit() if r["method"] == "tools/call" and r["server"] != "*"]
    assert routed == ([("mail", "nope")] if reason == "tool_unknown" else [])


async def test_tokens_are_bound_to_the_aggregate_resource(gw: RunningGateway) -> None:
    body, headers = call("mail.search", {"query": "q"}), {**MODERN_HEADERS, "mcp-name": "mail.search"}
    async with gw.http(gw.token(server="mail")) as http:
        assert (await http.post(aggregate_url(gw), json=body, headers=headers)).status_code == 401
    async with gw.http(aggregate_token(gw)) as http:
        response = await http.post(gw.url("mail"), json=call("search", {"query": "q"}), headers=MODERN_HEADERS)
        assert response.status_code == 401
        document = (await http.get(f"{gw.base_url}/.well-known/oauth-protected-resource/mcp")).json()
    assert document["resource"] == aggregate_url(gw)
