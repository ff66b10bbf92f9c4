"""Tests of ``policy.authorizer``: what each MCP method is decided on, policy before scopes, lists that show
exactly what may be called, and the scopes the authorization server may grant."""

from __future__ import annotations

from pathlib import Path
from typing import Final

import pytest

from mcp_bastion.errors import InsufficientScope, InvalidArguments, MalformedRequest, PolicyDenied
from mcp_bastion.exchange import Principal
from mcp_bastion.jsonrpc.message import JSONValue, Message, classify
from mcp_bastion.oauth.service import User
from mcp_bastion.policy.authorizer import Authorizer, ScopeGrants, UnknownTool
from mcp_bastion.policy.catalog import ServerScopes, ToolCatalog
from mcp_bastion.policy.engine import Decision
from mcp_bastion.policy.entities import Caller
from mcp_bastion.policy.schema import LIST_ACTIONS
from mcp_bastion.policy.store import PolicyStore

POLICY: Final = """
@id("staff-list")
permit (principal, action in Action::"list", resource == Server::"s")
when { principal in Role::"analyst" || principal in Role::"admin" };

@id("analyst-read-only")
permit (principal in Role::"analyst", action == Action::"tools/call", resource in Server::"s")
when { resource.read_only };

@id("analyst-items")
permit (
  principal in Role::"analyst", action in [Action::"resources/read", Action::"prompts/get"], resource in Server::"s"
);

@id("admin-all")
permit (
  principal in Role::"admin",
  action in [Action::"tools/call", Action::"resources/read", Action::"prompts/get"],
  resource in Server::"s"
);

@id("no-apac")
forbid (principal, action in [Action::"tools/call", Action::"prompts/get"], resource)
when { context has arguments && context.arguments has region && context.arguments.region == "apac" };

@id("no-secrets")
forbid (principal, action == Action::"resources/read", resource) when { resource.uri like "s://secret/*" };

@id("grant-read")
permit (principal in Role::"analyst", action == Action::"grant_scope", resource == Scope::"s.read");

@id("grant-all-to-admins")
permit (principal in Role::"admin", action == Action::"grant_scope", resource);
"""
ARGUMENTS: Final = {"region": "String", "limit": "Long"}
OFFERED: Final = frozenset({"s.read", "s.write", "s.delete"})
ALL_SCOPES: Final = OFFERED
TOOLS: Final[dict[str, dict[str, JSONValue]]] = {
    "get": {"readOnlyHint": True},
    "edit": {"readOnlyHint": False, "destructiveHint": False},
    "drop": {"destructiveHint": True},
}
ROLES: Final = {"alice": {"analyst"}, "bob": {"admin"}, "carol": set[str]()}


def caller(user: str, scopes: frozenset[str] = ALL_SCOPES) -> Caller:
    principal = Principal(user, "https://issuer", "bearer", scopes=scopes, roles=frozenset(ROLES[user]))
    return Caller(principal, "10.0.0.1", tls=True)


def message(method: str, params: dict[str, JSONValue] | None = None) -> Message:
    raw: dict[str, JSONValue] = {"jsonrpc": "2.0", "id": 1, "method": method}
    if params is not None:
        raw["params"] = params
    return classify(raw)


@pytest.fixture
def store(tmp_path: Path) -> PolicyStore:
    path = tmp_path / "policy.cedar"
    path.write_text(POLICY)
    return PolicyStore([path], ARGUMENTS, watch=False)


@pytest.fixture
def authorizer(store: PolicyStore) -> Authorizer:
    catalog = ToolCatalog({"s": ServerScopes(OFFERED, "s"), "other": ServerScopes(frozenset(), "other")})
    for name, hints in TOOLS.items():
        catalog.learn("s", {"name": name, "annotations": hints})
    return Authorizer(store, catalog, ARGUMENTS)


def check(authorizer: Authorizer, who: Caller, method: str, params: dict[str, JSONValue] | None) -> Decision | None:
    return authorizer.check_call(who, "s", message(method, params), authorizer.engine)


# -- tools/call ----------------------------------------------------------------------------------------


def test_a_permitted_call_with_the_scopes_is_allowed(authorizer: Authorizer) -> None:
    decision = check(authorizer, caller("alice"), "tools/call", {"name": "get", "arguments": {"region": "eu"}})
    assert decision is not None
    assert (decision.allowed, decision.policies) == (True, ("analyst-read-only",))


def test_a_tool_the_catalog_does_not_know_is_unknown(authorizer: Authorizer) -> None:
    with pytest.raises(UnknownTool):
        check(authorizer, caller("bob"), "tools/call", {"name": "never_listed"})


@pytest.mark.parametrize(
    "params",
    [
        pytest.param(None, id="no-params"),
        pytest.param({}, id="no-name"),
        pytest.param({"name": ""}, id="empty"),
        pytest.param({"name": 7}, id="number"),
        pytest.param({"name": ["get"]}, id="list"),
    ],
)
def test_a_call_without_a_string_name_is_malformed(authorizer: Authorizer, params: dict[str, JSONValue] | None) -> None:
    with pytest.raises(MalformedRequest) as caught:
        check(authorizer, caller("bob"), "tools/call", params)
    assert caught.value.reason == "tool_name_missing"


@pytest.mark.parametrize("arguments", [[], "region=eu", 5, True])
def test_arguments_that_are_not_an_object_are_invalid(authorizer: Authorizer, arguments: JSONValue) -> None:
    with pytest.raises(InvalidArguments) as caught:
        check(authorizer, caller("bob"), "tools/call", {"name": "get", "arguments": arguments})
    assert caught.value.reason == "arguments_not_object"


def test_null_or_absent_arguments_are_no_arguments(authorizer: Authorizer) -> None:
    every: list[dict[str, JSONValue]] = [
        {"name": "get"},
        {"name": "get", "arguments": None},
        {"name": "get", "arguments": {}},
    ]
    for params in every:
        decision = check(authorizer, caller("alice"), "tools/call", params)
        assert decision is not None
        assert decision.allowed


@pytest.mark.parametrize("value", [1.5, None, {"x": 1}, 2**70])
def test_an_argument_without_a_cedar_value_is_invalid(authorizer: Authorizer, value: JSONValue) -> None:
    with pytest.raises(InvalidArguments) as caught:
        check(authorizer, caller("bob"), "tools/call", {"name": "get", "arguments": {"limit": value}})
    assert caught.value.reason == "argument_not_representable"


def test_an_argument_of_the_wrong_type_is_denied(authorizer: Authorizer) -> None:
    """``["apac"]`` for a String must not slip past the forbid on ``region == "apac"``."""
    with pytest.raises(PolicyDenied) as caught:
        check(authorizer, caller("bob"), "tools/call", {"name": "get", "arguments": {"region": ["apac"]}})
    assert caught.value.reason == "policy_error"


def test_undeclared_arguments_are_invisible_to_the_policy(authorizer: Authorizer) -> None:
    decision = check(authorizer, caller("bob"), "tools/call", {"name": "get", "arguments": {"other": 1.5}})
    assert decision is not None
    assert decision.allowed


def test_a_forbid_on_an_argument_denies_and_names_itself(authorizer: Authorizer) -> None:
    with pytest.raises(PolicyDenied) as caught:
        check(authorizer, caller("bob"), "tools/call", {"name": "get", "arguments": {"region": "apac"}})
    assert (caught.value.reason, caught.value.policies) == ("policy_forbid", ("no-apac",))


@pytest.mark.parametrize(
    ("user", "tool"),
    [
        pytest.param("carol", "get", id="no-role"),
        pytest.param("alice", "edit", id="analyst-edit"),
        pytest.param("alice", "drop", id="analyst-drop"),
    ],
)
def test_the_policy_is_asked_before_the_scopes(authorizer: Authorizer, user: str, tool: str) -> None:
    """A user the policy refuses gets PolicyDenied even without scopes: it learns nothing about them."""
    with pytest.raises(PolicyDenied) as caught:
        check(authorizer, caller(user, frozenset()), "tools/call", {"name": tool})
    assert (caught.value.reason, caught.value.policies) == ("policy_no_permit", ())


@pytest.mark.parametrize(
    ("tool", "scopes", "needed"),
    [
        pytest.param("get", set[str](), {"s.read"}, id="read"),
        pytest.param("edit", {"s.read"}, {"s.write"}, id="write"),
        pytest.param("drop", {"s.read"}, {"s.write", "s.delete"}, id="destructive"),
        pytest.param("drop", {"s.write"}, {"s.write", "s.delete"}, id="destructive-with-one"),
    ],
)
def test_a_missing_scope_is_insufficient_scope_with_every_needed_scope(
    authorizer: Authorizer, tool: str, scopes: set[str], needed: set[str]
) -> None:
    with pytest.raises(InsufficientScope) as caught:
        check(authorizer, caller("bob", frozenset(scopes)), "tools/call", {"name": tool})
    assert caught.value.reason == "insufficient_scope"
    assert caught.value.scopes == needed
    # The control: with every needed scope the same call passes.
    decision = check(authorizer, caller("bob", frozenset(needed)), "tools/call", {"name": tool})
    assert decision is not None
    assert decision.allowed


# -- resources, prompts, completions -------------------------------------------------------------------


@pytest.mark.parametrize("method", ["resources/read", "resources/subscribe", "resources/unsubscribe"])
def test_resource_methods(authorizer: Authorizer, method: str) -> None:
    decision = check(authorizer, caller("alice"), method, {"uri": "s://schema"})
    assert decision is not None
    assert decision.allowed
    with pytest.raises(PolicyDenied) as no_role:
        check(authorizer, caller("carol"), method, {"uri": "s://schema"})
    assert no_role.value.reason == "policy_no_permit"
    with pytest.raises(PolicyDenied) as forbidden:
        check(authorizer, caller("bob"), method, {"uri": "s://secret/keys"})
    assert (forbidden.value.reason, forbidden.value.policies) == ("policy_forbid", ("no-secrets",))
    with pytest.raises(InsufficientScope) as scope:
        check(authorizer, caller("alice", frozenset({"s.write"})), method, {"uri": "s://schema"})
    assert scope.value.scopes == {"s.read"}
    malformed_params: list[dict[str, JSONValue] | None] = [None, {}, {"uri": ""}, {"uri": 5}]
    for params in malformed_params:
        with pytest.raises(MalformedRequest) as malformed:
            check(authorizer, caller("bob"), method, params)
        assert malformed.value.reason == "resource_uri_missing"


def test_prompts_get(authorizer: Authorizer) -> None:
    decision = check(authorizer, caller("alice"), "prompts/get", {"name": "summary", "arguments": {"region": "eu"}})
    assert decision is not None
    assert decision.allowed
    with pytest.raises(PolicyDenied) as forbidden:
        check(authorizer, caller("alice"), "prompts/get", {"name": "summary", "arguments": {"region": "apac"}})
    assert forbidden.value.reason == "policy_forbid"
    with pytest.raises(PolicyDenied):
        check(authorizer, caller("carol"), "prompts/get", {"name": "summary"})
    with pytest.raises(InsufficientScope):
        check(authorizer, caller("alice", frozenset()), "prompts/get", {"name": "summary"})
    with pytest.raises(InvalidArguments):
        check(authorizer, caller("alice"), "prompts/get", {"name": "summary", "arguments": ["x"]})
    nameless: list[dict[str, JSONValue] | None] = [None, {"name": ""}, {"name": 1}]
    for params in nameless:
        with pytest.raises(MalformedRequest) as malformed:
            check(authorizer, caller("alice"), "prompts/get", params)
        assert malformed.value.reason == "prompt_name_missing"


@pytest.mark.parametrize(
    ("ref", "like"),
    [
        pytest.param({"type": "ref/prompt", "name": "summary"}, ("prompts/get", {"name": "summary"}), id="prompt"),
        pytest.param(
            {"type": "ref/resource", "uri": "s://schema"}, ("resources/read", {"uri": "s://schema"}), id="uri"
        ),
        pytest.param(
            {"type": "ref/resource", "uri": "s://secret/{id}"},
            ("resources/read", {"uri": "s://secret/{id}"}),
            id="forbidden-uri",
        ),
    ],
)
@pytest.mark.parametrize("user", ["alice", "bob", "carol"])
@pytest.mark.parametrize("scopes", [ALL_SCOPES, frozenset()], ids=["scopes", "no-scopes"])
def test_a_completion_is_decided_like_its_item(
    authorizer: Authorizer,
    ref: dict[str, JSONValue],
    like: tuple[str, dict[str, JSONValue]],
    user: str,
    scopes: frozenset[str],
) -> None:
    def outcome(method: str, params: dict[str, JSONValue]) -> str:
        try:
            check(authorizer, caller(user, scopes), method, params)
        except (PolicyDenied, InsufficientScope) as refused:
            return refused.reason
        return "allow"

    completion = outcome("completion/complete", {"ref": ref, "argument": {"name": "id", "value": "C"}})
    assert completion == outcome(*like)


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({}, id="no-ref"),
        pytest.param({"ref": "ref/prompt"}, id="ref-not-object"),
        pytest.param({"ref": {"type": "ref/tool", "name": "get"}}, id="unknown-type"),
        pytest.param({"ref": {"type": "ref/prompt"}}, id="prompt-without-name"),
        pytest.param({"ref": {"type": "ref/prompt", "name": 3}}, id="prompt-name-number"),
        pytest.param({"ref": {"type": "ref/resource", "name": "s://schema"}}, id="resource-without-uri"),
    ],
)
def test_a_completion_with_a_bad_ref_is_refused(authorizer: Authorizer, params: dict[str, JSONValue]) -> None:
    with pytest.raises(MalformedRequest) as caught:
        check(authorizer, caller("bob"), "completion/complete", params)
    assert caught.value.reason == "completion_ref_invalid"


# -- lists and other methods ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", LIST_ACTIONS)
def test_list_methods_need_a_permit_and_no_scope(authorizer: Authorizer, method: str) -> None:
    for user in ("alice", "bob"):
        decision = check(authorizer, caller(user, frozenset()), method, None)
        assert decision is not None
        assert (decision.allowed, decision.policies) == (True, ("staff-list",))
    with pytest.raises(PolicyDenied) as caught:
        check(authorizer, caller("carol"), method, None)
    assert caught.value.reason == "policy_no_permit"
    with pytest.raises(PolicyDenied):  # the permit names server s only
        authorizer.check_call(caller("alice"), "other", message(method), authorizer.engine)


@pytest.mark.parametrize("method", ["initialize", "ping", "logging/setLevel"])
def test_methods_the_policy_does_not_decide(authorizer: Authorizer, method: str) -> None:
    assert check(authorizer, caller("carol", frozenset()), method, {}) is None


# -- visible() ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("user", ["alice", "bob", "carol"])
@pytest.mark.parametrize(
    "scopes",
    [frozenset(), frozenset({"s.read"}), frozenset({"s.read", "s.write"}), ALL_SCOPES],
    ids=["none", "read", "read-write", "all"],
)
def test_a_tool_is_listed_exactly_when_a_call_without_arguments_passes(
    store: PolicyStore, user: str, scopes: frozenset[str]
) -> None:
    fresh = Authorizer(store, ToolCatalog({"s": ServerScopes(OFFERED, "s")}), ARGUMENTS)
    who = caller(user, scopes)
    for name, hints in TOOLS.items():
        listed = fresh.visible(fresh.engine, who, "s", "tools/list", {"name": name, "annotations": hints})
        try:
            fresh.check_call(who, "s", message("tools/call", {"name": name}), fresh.engine)
        except (PolicyDenied, InsufficientScope):
            callable_ = False
        else:
            callable_ = True
        assert listed == callable_, (user, sorted(scopes), name)


def test_the_matrix_is_not_trivial(authorizer: Authorizer) -> None:
    """The control for the matrix above: some tools are listed, some are not."""
    engine = authorizer.engine
    assert authorizer.visible(engine, caller("alice"), "s", "tools/list", {"name": "get", "annotations": TOOLS["get"]})
    assert not authorizer.visible(
        engine, caller("alice"), "s", "tools/list", {"name": "edit", "annotations": TOOLS["edit"]}
    )
    assert not authorizer.visible(
        engine, caller("bob", frozenset({"s.write"})), "s", "tools/list", {"name": "drop", "annotations": TOOLS["drop"]}
    )
    assert authorizer.visible(engine, caller("bob"), "s", "tools/list", {"name": "drop", "annotations": TOOLS["drop"]})


def test_listing_teaches_the_catalog(store: PolicyStore) -> None:
    fresh = Authorizer(store, ToolCatalog({"s": ServerScopes(OFFERED, "s")}), ARGUMENTS)
    with pytest.raises(UnknownTool):
        fresh.check_call(caller("bob"), "s", message("tools/call", {"name": "new"}), fresh.engine)
    fresh.visible(fresh.engine, caller("carol"), "s", "tools/list", {"name": "new"})  # listed to anyone
    decision = fresh.check_call(caller("bob"), "s", message("tools/call", {"name": "new"}), fresh.engine)
    assert decision is not None
    assert decision.allowed


@pytest.mark.parametrize(
    ("method", "item"),
    [
        pytest.param("resources/list", {"uri": "s://schema", "name": "schema"}, id="resource"),
        pytest.param("resources/templates/list", {"uriTemplate": "s://c/{id}", "name": "c"}, id="template"),
        pytest.param("prompts/list", {"name": "summary"}, id="prompt"),
    ],
)
def test_items_are_listed_like_their_read(authorizer: Authorizer, method: str, item: dict[str, JSONValue]) -> None:
    engine = authorizer.engine
    assert authorizer.visible(engine, caller("alice", frozenset({"s.read"})), "s", method, item)
    assert not authorizer.visible(engine, caller("alice", frozenset({"s.write"})), "s", method, item)
    assert not authorizer.visible(engine, caller("carol"), "s", method, item)


def test_forbidden_resources_are_not_listed(authorizer: Authorizer) -> None:
    engine = authorizer.engine
    assert not authorizer.visible(engine, caller("bob"), "s", "resources/list", {"uri": "s://secret/keys"})
    assert not authorizer.visible(
        engine, caller("bob"), "s", "resources/templates/list", {"uriTemplate": "s://secret/{k}"}
    )


@pytest.mark.parametrize(
    ("method", "item"),
    [
        pytest.param("tools/list", "get", id="tool-not-object"),
        pytest.param("tools/list", {"annotations": {}}, id="tool-without-name"),
        pytest.param("resources/list", {"uriTemplate": "s://x"}, id="resource-without-uri"),
        pytest.param("resources/templates/list", {"uri": "s://x"}, id="template-without-template"),
        pytest.param("prompts/list", {"title": "x"}, id="prompt-without-name"),
        pytest.param("prompts/list", None, id="null"),
        pytest.param("other/list", {"name": "x"}, id="unknown-list"),
    ],
)
def test_items_that_cannot_be_classified_are_not_listed(authorizer: Authorizer, method: str, item: JSONValue) -> None:
    assert not authorizer.visible(authorizer.engine, caller("bob"), "s", method, item)


def test_the_authorizer_uses_the_engine_in_force(store: PolicyStore, authorizer: Authorizer, tmp_path: Path) -> None:
    assert authorizer.engine is store.engine
    (tmp_path / "policy.cedar").write_text("// nothing\n")
    assert store.reload()
    assert authorizer.engine is store.engine
    with pytest.raises(PolicyDenied):
        check(authorizer, caller("bob"), "tools/call", {"name": "get"})


# -- ScopeGrants --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "roles", "granted"),
    [
        pytest.param("alice", {"analyst"}, {"s.read"}, id="analyst"),
        pytest.param("bob", {"admin"}, {"s.read", "s.write", "s.delete"}, id="admin"),
        pytest.param("carol", set[str](), set[str](), id="no-role"),
    ],
)
def test_scope_grants_grant_only_permitted_scopes(
    store: PolicyStore, user: str, roles: set[str], granted: set[str]
) -> None:
    grants = ScopeGrants(store, "https://issuer")
    requested = frozenset({"s.read", "s.write", "s.delete"})
    assert grants(User(user, user, frozenset(roles)), "https://gw/mcp/s", requested, "client") == granted
    assert grants(User(user, user, frozenset(roles)), "https://gw/mcp/s", frozenset(), "client") == frozenset()


def test_scope_grants_never_add_a_scope_not_requested(store: PolicyStore) -> None:
    grants = ScopeGrants(store, "https://issuer")
    assert grants(User("bob", "bob", frozenset({"admin"})), "r", frozenset({"s.read"}), "c") == {"s.read"}


def test_a_policy_on_the_presence_of_arguments_lists_as_it_calls(tmp_path: Path) -> None:
    # The list asks exactly what a call without arguments asks: `context has arguments` is true for both.
    path = tmp_path / "p.cedar"
    path.write_text("permit(principal, action, resource) when { context has arguments };\n")
    store = PolicyStore([path], ARGUMENTS, watch=False)
    fresh = Authorizer(store, ToolCatalog({"s": ServerScopes(frozenset(), "s")}), ARGUMENTS)
    who = caller("carol")
    assert fresh.visible(fresh.engine, who, "s", "tools/list", {"name": "get"})
    assert fresh.check_call(who, "s", message("tools/call", {"name": "get"}), fresh.engine) is not None
