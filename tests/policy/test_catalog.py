"""Tests of ``policy.catalog``: derived scopes, MCP's annotation defaults, settings over the server's
claims, and the bounds on what a server can make the catalog hold."""

from __future__ import annotations

import pytest

from mcp_bastion.jsonrpc.message import JSONValue
from mcp_bastion.policy import catalog as catalog_module
from mcp_bastion.policy.catalog import ServerScopes, ToolCatalog, default_prefix
from mcp_bastion.settings import ToolSettings, UpstreamSettings

OFFERED = frozenset({"customers.read", "customers.write", "customers.delete"})


def catalog(offered: frozenset[str] = OFFERED, **tools: ToolSettings) -> ToolCatalog:
    return ToolCatalog({"customers": ServerScopes(offered, default_prefix("customers", offered), tools)})


def tool(name: str, **annotations: JSONValue) -> dict[str, JSONValue]:
    return {"name": name, "annotations": dict(annotations)} if annotations else {"name": name}


@pytest.mark.parametrize(
    ("annotations", "scopes"),
    [
        pytest.param({"readOnlyHint": True}, {"customers.read"}, id="read-only"),
        pytest.param({"readOnlyHint": True, "destructiveHint": True}, {"customers.read"}, id="read-only-wins"),
        pytest.param({"readOnlyHint": False, "destructiveHint": False}, {"customers.write"}, id="write"),
        pytest.param({"destructiveHint": True}, {"customers.write", "customers.delete"}, id="destructive"),
        pytest.param({}, {"customers.write", "customers.delete"}, id="no-annotations"),
    ],
)
def test_derived_scopes(annotations: dict[str, JSONValue], scopes: set[str]) -> None:
    facts = catalog().learn("customers", tool("t", **annotations))
    assert facts is not None
    assert facts.scopes == scopes


def test_no_offered_scopes_means_no_scope_needed() -> None:
    facts = catalog(frozenset()).learn("customers", tool("t", destructiveHint=True))
    assert facts is not None
    assert facts.scopes == frozenset()
    assert catalog(frozenset()).scopes("customers").read_scopes() == frozenset()
    assert catalog().scopes("customers").read_scopes() == {"customers.read"}


def test_mcp_defaults_when_annotations_are_absent() -> None:
    for definition in (tool("t"), {"name": "t", "annotations": None}, {"name": "t", "annotations": "junk"}):
        facts = catalog().learn("customers", definition)
        assert facts is not None
        assert (facts.read_only, facts.destructive, facts.idempotent, facts.open_world) == (False, True, False, True)


def test_annotations_that_are_not_booleans_are_ignored() -> None:
    facts = catalog().learn("customers", tool("t", readOnlyHint="yes", destructiveHint=0))
    assert facts is not None
    assert (facts.read_only, facts.destructive) == (False, True)
    assert facts.scopes == {"customers.write", "customers.delete"}


def test_declared_annotations_are_used() -> None:
    facts = catalog().learn(
        "customers", tool("t", readOnlyHint=False, destructiveHint=False, idempotentHint=True, openWorldHint=False)
    )
    assert facts is not None
    assert (facts.read_only, facts.destructive, facts.idempotent, facts.open_world) == (False, False, True, False)


def test_settings_override_a_server_claiming_read_only() -> None:
    """A server saying readOnlyHint on a tool the operator knows writes must not get it past with .read."""
    facts = catalog(t=ToolSettings(read_only=False)).learn("customers", tool("t", readOnlyHint=True))
    assert facts is not None
    assert facts.read_only is False
    assert "customers.write" in facts.scopes
    assert "customers.read" not in facts.scopes
    # The control: without the setting the server's claim stands.
    unset = catalog().learn("customers", tool("t", readOnlyHint=True))
    assert unset is not None
    assert unset.scopes == {"customers.read"}


def test_settings_override_every_annotation() -> None:
    settings = ToolSettings(read_only=False, destructive=True, idempotent=False, open_world=False)
    facts = catalog(t=settings).learn(
        "customers", tool("t", readOnlyHint=True, destructiveHint=False, idempotentHint=True, openWorldHint=True)
    )
    assert facts is not None
    assert (facts.read_only, facts.destructive, facts.idempotent, facts.open_world) == (False, True, False, False)
    assert facts.scopes == {"customers.write", "customers.delete"}


def test_settings_name_the_scopes() -> None:
    cat = catalog(t=ToolSettings(scopes=("customers.admin",)), free=ToolSettings(scopes=()))
    needs = cat.learn("customers", tool("t", readOnlyHint=True))
    free = cat.learn("customers", tool("free", destructiveHint=True))
    assert needs is not None
    assert free is not None
    assert needs.scopes == {"customers.admin"}
    assert free.scopes == frozenset()


def test_a_tool_is_unknown_until_learnt_and_relearning_updates_it() -> None:
    cat = catalog()
    assert cat.get("customers", "t") is None
    cat.learn("customers", tool("t", readOnlyHint=True))
    first = cat.get("customers", "t")
    assert first is not None
    assert first.read_only
    cat.learn("customers", tool("t", readOnlyHint=False))
    again = cat.get("customers", "t")
    assert again is not None
    assert not again.read_only
    assert cat.get("customers", "other") is None


@pytest.mark.parametrize(
    "definition",
    [
        pytest.param({}, id="no-name"),
        pytest.param({"name": ""}, id="empty-name"),
        pytest.param({"name": 7}, id="number-name"),
        pytest.param({"name": None}, id="null-name"),
        pytest.param({"name": ["t"]}, id="list-name"),
    ],
)
def test_a_malformed_definition_is_not_learnt(definition: dict[str, JSONValue]) -> None:
    cat = catalog()
    assert cat.learn("customers", definition) is None


def test_the_catalog_holds_at_most_max_tools_per_upstream(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog_module, "MAX_TOOLS", 3)
    cat = catalog()
    for index in range(3):
        assert cat.learn("customers", tool(f"t{index}")) is not None
    assert cat.learn("customers", tool("t3")) is None
    assert cat.get("customers", "t3") is None
    assert cat.learn("customers", tool("t0", readOnlyHint=True)) is not None  # a known tool is still updated
    updated = cat.get("customers", "t0")
    assert updated is not None
    assert updated.read_only


@pytest.mark.parametrize(
    ("offered", "prefix"),
    [
        pytest.param({"customers.read", "customers.write"}, "customers", id="shared-prefix"),
        pytest.param({"crm.read"}, "crm", id="one-scope"),
        pytest.param({"crm.read", "billing.read"}, "srv", id="two-prefixes"),
        pytest.param({"crm.read", "admin"}, "srv", id="one-without-dot"),
        pytest.param({"admin"}, "srv", id="no-dot"),
        pytest.param(set(), "srv", id="none-offered"),
    ],
)
def test_default_prefix(offered: set[str], prefix: str) -> None:
    assert default_prefix("srv", frozenset(offered)) == prefix


def test_from_settings() -> None:
    upstreams = {
        "customers": UpstreamSettings(
            url="https://customers.internal/mcp",
            scopes={"customers.read": "r", "customers.write": "w"},
            tools={"t": ToolSettings(read_only=True)},
        ),
        "billing": UpstreamSettings(url="https://billing.internal/mcp", scopes={"money.read": "r"}, scope_prefix="pay"),
        "open": UpstreamSettings(url="https://open.internal/mcp"),
    }
    cat = ToolCatalog.from_settings(upstreams)
    assert cat.servers == {"customers", "billing", "open"}
    assert cat.scopes("customers").prefix == "customers"
    assert cat.scopes("billing").prefix == "pay"
    overridden = cat.learn("customers", tool("t", readOnlyHint=False))
    assert overridden is not None
    assert overridden.scopes == {"customers.read"}
    paid = cat.learn("billing", tool("charge", readOnlyHint=True))
    assert paid is not None
    assert paid.scopes == {"pay.read"}  # not offered: no token can carry it (logged), the tool is closed
    free = cat.learn("open", tool("anything"))
    assert free is not None
    assert free.scopes == frozenset()


def test_forget_drops_what_was_learnt_about_one_server() -> None:
    cat = ToolCatalog({"a": ServerScopes(frozenset(), "a"), "b": ServerScopes(frozenset(), "b")})
    cat.learn("a", tool("t"))
    cat.learn("b", tool("t"))
    cat.forget("a")
    assert cat.get("a", "t") is None
    assert cat.get("b", "t") is not None
    assert cat.learn("a", tool("t")) is not None  # learnt again from the next listing
