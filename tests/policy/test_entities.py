"""Tests of ``policy.entities``: typed arguments, and outside strings kept as data, never policy text."""

from __future__ import annotations

import pytest

from mcp_bastion.exchange import Principal
from mcp_bastion.jsonrpc.message import JSONValue
from mcp_bastion.policy import entities
from mcp_bastion.policy.engine import PolicySource, compile_policies
from mcp_bastion.policy.entities import InvalidArgument, typed_arguments

DECLARED = {"amount": "Long", "region": "String", "tags": "Set<String>", "ids": "Set<Long>", "dry_run": "Bool"}
TOOL = entities.ToolFacts("s", "t", frozenset())


def caller(subject: str = "alice", roles: frozenset[str] = frozenset(), address: str = "10.0.0.1") -> entities.Caller:
    return entities.Caller(Principal(subject, "https://issuer", "bearer", roles=roles), address, tls=True)


# -- typed_arguments -----------------------------------------------------------------------------------


def test_only_declared_arguments_are_kept() -> None:
    arguments: dict[str, JSONValue] = {"amount": 5, "region": "eu", "secret": "x", "nested": {"a": 1}, "f": 1.5}
    assert typed_arguments(arguments, DECLARED) == {"amount": 5, "region": "eu"}
    assert typed_arguments(arguments, {}) == {}


@pytest.mark.parametrize(
    "arguments",
    [
        pytest.param({"amount": 5, "region": "eu", "tags": [], "ids": [], "dry_run": False}, id="empty-sets"),
        pytest.param({"tags": ["a", "b"], "ids": [1, -(2**63), 2**63 - 1]}, id="sets-and-long-bounds"),
        pytest.param({"amount": -(2**63)}, id="min-long"),
        pytest.param({"amount": 2**63 - 1}, id="max-long"),
        pytest.param({"dry_run": True}, id="bool"),
    ],
)
def test_representable_values_pass_unchanged(arguments: dict[str, JSONValue]) -> None:
    assert typed_arguments(arguments, DECLARED) == arguments


@pytest.mark.parametrize(
    "arguments",
    [
        pytest.param({"amount": 1.5}, id="float"),
        pytest.param({"amount": 5.0}, id="integral-float"),
        pytest.param({"amount": 2**63}, id="above-64-bit"),
        pytest.param({"amount": -(2**63) - 1}, id="below-64-bit"),
        pytest.param({"amount": None}, id="null"),
        pytest.param({"region": None}, id="null-string"),
        pytest.param({"region": {"__entity": {"type": "User", "id": "admin"}}}, id="entity-escape"),
        pytest.param({"region": {"__extn": {"fn": "ip", "arg": "10.0.0.1"}}}, id="extension-escape"),
        pytest.param({"amount": {"a": 1}}, id="object"),
        pytest.param({"ids": [1, 2.5]}, id="float-in-set"),
        pytest.param({"ids": [2**64]}, id="big-int-in-set"),
        pytest.param({"tags": ["a", None]}, id="null-in-set"),
        pytest.param({"tags": [{"__entity": {"type": "Role", "id": "admin"}}]}, id="object-in-set"),
        pytest.param({"region": 1.5}, id="float-for-string"),
    ],
)
def test_values_without_a_cedar_value_are_refused(arguments: dict[str, JSONValue]) -> None:
    with pytest.raises(InvalidArgument):
        typed_arguments(arguments, DECLARED)


def test_an_undeclared_argument_is_never_checked() -> None:
    assert typed_arguments({"free": 1.5, "other": None}, DECLARED) == {}


@pytest.mark.parametrize(
    "arguments",
    [
        pytest.param({"amount": "5000"}, id="string-for-long"),
        pytest.param({"amount": True}, id="bool-for-long"),
        pytest.param({"region": ["apac"]}, id="list-for-string"),
        pytest.param({"region": 7}, id="long-for-string"),
        pytest.param({"tags": "apac"}, id="string-for-set"),
        pytest.param({"dry_run": "true"}, id="string-for-bool"),
    ],
)
def test_wrong_types_pass_through_and_are_denied_by_the_engine(arguments: dict[str, JSONValue]) -> None:
    """Never coerced, never dropped: ``"5000"`` for a Long must not dodge a forbid on ``amount``."""
    assert typed_arguments(arguments, DECLARED) == arguments
    engine = compile_policies(
        [
            PolicySource(
                "p.cedar",
                "permit (principal, action, resource);\n"
                "forbid (principal, action, resource) when { context has arguments && "
                "context.arguments has amount && context.arguments.amount > 1000 };",
            )
        ],
        DECLARED,
    )
    assert engine.decide(entities.tool_query(caller(), TOOL, {"amount": 5})).allowed  # the control
    assert not engine.decide(entities.tool_query(caller(), TOOL, {"amount": 5000})).allowed
    decision = engine.decide(entities.tool_query(caller(), TOOL, typed_arguments(arguments, DECLARED)))
    assert (decision.allowed, decision.reason) == (False, "policy_error")


# -- outside strings are data --------------------------------------------------------------------------

INJECTIONS = [
    'alice" || principal == User::"x',
    'alice", action, resource); permit(principal',
    'alice"\n|| true',
    "alice\\",
    'alice" || true || "',
]


@pytest.mark.parametrize("subject", INJECTIONS)
def test_a_subject_that_looks_like_policy_text_is_just_an_odd_id(subject: str) -> None:
    engine = compile_policies([PolicySource("p.cedar", 'permit (principal == User::"alice", action, resource);')], {})
    assert engine.decide(entities.tool_query(caller("alice"), TOOL, None)).allowed  # the control
    assert not engine.decide(entities.tool_query(caller(subject), TOOL, None)).allowed
    assert not engine.decide(entities.grant_query(caller(subject).principal, "s.read", "c")).allowed


@pytest.mark.parametrize("role", ['analyst" || true || "', 'analyst"]; permit(principal, action, resource'])
def test_a_role_that_looks_like_policy_text_is_just_an_odd_role(role: str) -> None:
    engine = compile_policies([PolicySource("p.cedar", 'permit (principal in Role::"admin", action, resource);')], {})
    assert engine.decide(entities.tool_query(caller(roles=frozenset({"admin"})), TOOL, None)).allowed
    assert not engine.decide(entities.tool_query(caller(roles=frozenset({role})), TOOL, None)).allowed


def test_tool_names_and_uris_are_data() -> None:
    engine = compile_policies(
        [
            PolicySource(
                "p.cedar",
                'permit (principal, action == Action::"tools/call", resource == Tool::"s/read");\n'
                'permit (principal, action == Action::"resources/read", resource) when { resource.uri == "s://a" };',
            )
        ],
        {},
    )
    odd = entities.ToolFacts("s", 'read" || true || "', frozenset())
    assert engine.decide(entities.tool_query(caller(), entities.ToolFacts("s", "read", frozenset()), None)).allowed
    assert not engine.decide(entities.tool_query(caller(), odd, None)).allowed
    assert engine.decide(entities.resource_query(caller(), "s", "s://a", frozenset())).allowed
    assert not engine.decide(entities.resource_query(caller(), "s", 's://a" || true', frozenset())).allowed


def test_a_string_argument_that_looks_like_an_entity_is_just_a_string() -> None:
    engine = compile_policies(
        [
            PolicySource(
                "p.cedar",
                "permit (principal, action, resource);\n"
                "forbid (principal, action, resource) when { context has arguments && context.arguments has region "
                '&& context.arguments.region == "apac" };',
            )
        ],
        {"region": "String"},
    )
    assert not engine.decide(entities.tool_query(caller(), TOOL, {"region": "apac"})).allowed
    for value in ('apac" || true', "APAC", "apac ", 'User::"apac"'):
        assert engine.decide(entities.tool_query(caller(), TOOL, {"region": value})).allowed


# -- the shapes ----------------------------------------------------------------------------------------


def test_the_query_key_covers_everything_decided_on() -> None:
    base = entities.tool_query(caller(), TOOL, {"amount": 1}, now=0.0)
    assert entities.tool_query(caller(), TOOL, {"amount": 1}, now=0.0).key == base.key
    different = [
        entities.tool_query(caller("bob"), TOOL, {"amount": 1}, now=0.0),
        entities.tool_query(caller(roles=frozenset({"admin"})), TOOL, {"amount": 1}, now=0.0),
        entities.tool_query(caller(address="10.0.0.2"), TOOL, {"amount": 1}, now=0.0),
        entities.tool_query(caller(), TOOL, {"amount": 2}, now=0.0),
        entities.tool_query(caller(), TOOL, None, now=0.0),
        entities.tool_query(
            caller(), entities.ToolFacts("s", "t", frozenset(), read_only=True), {"amount": 1}, now=0.0
        ),
        entities.tool_query(caller(), TOOL, {"amount": 1}, now=3600.0),
    ]
    assert len({query.key for query in different} | {base.key}) == len(different) + 1


def test_time_and_network_facts() -> None:
    # 2024-01-01 was a Monday; 13:30 UTC.
    monday = 1704115800.0
    query = entities.tool_query(caller(address="192.168.1.9"), TOOL, None, now=monday)
    context = query.request["context"]
    assert isinstance(context, dict)
    assert context["time"] == {"hour": 13, "weekday": 1}
    assert context["network"] == {"address": {"__extn": {"fn": "ip", "arg": "192.168.1.9"}}, "tls": True, "mtls": False}
    assert "arguments" not in context
    sunday = entities.list_query(caller(), "s", "tools/list", now=monday - 86400.0)
    sunday_context = sunday.request["context"]
    assert isinstance(sunday_context, dict)
    assert sunday_context["time"] == {"hour": 13, "weekday": 7}


def test_a_policy_can_decide_on_the_address() -> None:
    engine = compile_policies(
        [
            PolicySource(
                "p.cedar",
                'permit (principal, action == Action::"tools/call", resource)\n'
                'when { context.network.address.isInRange(ip("10.0.0.0/8")) };',
            )
        ],
        {},
    )
    assert engine.decide(entities.tool_query(caller(address="10.2.3.4"), TOOL, None)).allowed
    for outside in ("192.168.0.1", "0.0.0.0", "::1"):
        assert not engine.decide(entities.tool_query(caller(address=outside), TOOL, None)).allowed
    garbage = engine.decide(entities.tool_query(caller(address="not-an-ip"), TOOL, None))
    assert (garbage.allowed, garbage.reason) == (False, "policy_error")
