"""Response stage ``filter``: list answers rewritten to what the caller may use; everything else untouched."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from mcp_bastion.exchange import Exchange, Principal
from mcp_bastion.jsonrpc.message import JSONValue, parse_message
from mcp_bastion.pipeline.filter import FilterLists
from mcp_bastion.policy.authorizer import Authorizer
from mcp_bastion.policy.catalog import ServerScopes, ToolCatalog
from mcp_bastion.policy.store import PolicyStore
from mcp_bastion.upstream.base import Event
from tests.pipeline.test_stage import exchange

pytestmark = pytest.mark.anyio

POLICY = """
permit(principal in Role::"analyst", action == Action::"tools/call", resource) when { resource.read_only };
"""
TOOLS: list[JSONValue] = [
    {"name": "read", "annotations": {"readOnlyHint": True}},
    {"name": "write", "annotations": {"readOnlyHint": False, "destructiveHint": False}},
    {"name": "unannotated"},
    "not a tool",
]


@pytest.fixture
def stage(tmp_path: Path) -> FilterLists:
    path = tmp_path / "p.cedar"
    path.write_text(POLICY)
    catalog = ToolCatalog({"up": ServerScopes(frozenset({"up.read", "up.write"}), "up")})
    return FilterLists(Authorizer(PolicyStore([path], {}, watch=False), catalog, {}))


def listing(roles: frozenset[str], scopes: frozenset[str]) -> Exchange:
    ex = exchange()
    ex.principal = Principal("alice", "https://issuer", "bearer", scopes=scopes, roles=roles)
    ex.message = parse_message(orjson.dumps({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}), max_depth=16)
    return ex


def event(raw: dict[str, JSONValue]) -> Event:
    data = orjson.dumps(raw)
    return Event(data, parse_message(data, max_depth=16), event_id="e1")


def names(result: Event) -> list[str]:
    tools = orjson.loads(result.data)["result"]["tools"]
    return [tool["name"] for tool in tools]


async def test_a_list_keeps_only_what_the_caller_may_call(stage: FilterLists) -> None:
    answer = event({"jsonrpc": "2.0", "id": 3, "result": {"tools": TOOLS, "nextCursor": "c2"}})
    shown = await stage(listing(frozenset({"analyst"}), frozenset({"up.read"})), answer)
    assert names(shown) == ["read"]
    assert orjson.loads(shown.data)["result"]["nextCursor"] == "c2"  # the rest of the result is kept
    assert shown.message is not None
    assert shown.message.raw == orjson.loads(shown.data)  # the parsed message matches the bytes sent
    assert shown.event_id == "e1"
    # Without the scope the read tool needs, nothing; without the role, nothing either.
    assert names(await stage(listing(frozenset({"analyst"}), frozenset()), answer)) == []
    assert names(await stage(listing(frozenset(), frozenset({"up.read"})), answer)) == []


async def test_other_messages_pass_as_the_same_bytes(stage: FilterLists) -> None:
    ex = listing(frozenset({"analyst"}), frozenset({"up.read"}))
    others: list[dict[str, JSONValue]] = [
        {"jsonrpc": "2.0", "method": "notifications/progress", "params": {}},
        {"jsonrpc": "2.0", "id": 3, "error": {"code": -32603, "message": "boom"}},
        {"jsonrpc": "2.0", "id": 3, "result": {"tools": "not a list"}},
    ]
    for raw in others:
        original = event(raw)
        assert await stage(ex, original) is original


async def test_list_changed_makes_the_catalog_forget_the_server(stage: FilterLists) -> None:
    answer = event({"jsonrpc": "2.0", "id": 3, "result": {"tools": TOOLS}})
    await stage(listing(frozenset({"analyst"}), frozenset({"up.read"})), answer)
    catalog = stage.authorizer.catalog
    assert catalog.get("up", "read") is not None
    changed = event({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
    assert await stage(listing(frozenset(), frozenset()), changed) is changed
    assert catalog.get("up", "read") is None  # the next call lists the tools again
