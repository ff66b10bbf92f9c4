"""Tests of ``policy.schema``: the typed arguments, and that policies are held to the schema.

The request shapes ``entities`` builds are validated here too: a permit-all set decides every kind of
query without errors, which Cedar only does when the request and entities match the schema.
"""

from __future__ import annotations

import cedarpy
import pytest

from mcp_bastion.errors import ConfigError
from mcp_bastion.exchange import Principal
from mcp_bastion.jsonrpc.message import JSONValue
from mcp_bastion.policy import entities
from mcp_bastion.policy.engine import PolicyError, PolicySource, compile_policies
from mcp_bastion.policy.schema import ARGUMENT_TYPES, LIST_ACTIONS, schema_text

ARGUMENTS = {"amount": "Long", "region": "String", "tags": "Set<String>", "ids": "Set<Long>", "dry_run": "Bool"}

READS_EVERY_ARGUMENT = """
permit (principal, action == Action::"tools/call", resource)
when {
  context has arguments &&
  context.arguments has amount && context.arguments.amount < 100 &&
  context.arguments has region && context.arguments.region == "eu" &&
  context.arguments has tags && context.arguments.tags.contains("x") &&
  context.arguments has ids && context.arguments.ids.contains(7) &&
  context.arguments has dry_run && context.arguments.dry_run
};
"""


def validate(policy: str, arguments: dict[str, str]) -> cedarpy.ValidationResult:
    return cedarpy.validate_policies(policy, cedarpy.Schema.from_str(schema_text(arguments)))


def test_declared_arguments_validate_policies_that_read_them() -> None:
    assert validate(READS_EVERY_ARGUMENT, ARGUMENTS).validation_passed


def test_the_base_schema_alone_validates_policies_on_every_entity() -> None:
    policy = """
    permit (principal in Role::"analyst", action == Action::"tools/call", resource in Server::"s")
    when { resource.read_only && !resource.destructive && resource.scopes.contains("s.read")
           && principal.username == "alice" && principal.auth == "bearer" && context.client_id == ""
           && context.network.address.isInRange(ip("10.0.0.0/8")) && context.network.tls
           && context.time.hour < 18 && context.time.weekday <= 5 && context.scopes.contains("s.read") };
    permit (principal, action == Action::"resources/read", resource) when { resource.uri like "s://*" };
    permit (principal, action == Action::"prompts/get", resource) when { resource.name == "p" };
    permit (principal, action in Action::"list", resource == Server::"s");
    permit (principal, action == Action::"grant_scope", resource) when { resource.name == "s.read" };
    """
    assert validate(policy, {}).validation_passed


@pytest.mark.parametrize("kind", sorted(ARGUMENT_TYPES))
def test_every_allowed_type_is_a_schema_cedar_accepts(kind: str) -> None:
    text = schema_text({"value": kind})
    assert f"value?: {kind}," in text
    cedarpy.Schema.from_str(text)  # raises ValueError if Cedar refuses it


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("a-b", id="dash"),
        pytest.param("1x", id="leading-digit"),
        pytest.param('x"', id="quote"),
        pytest.param("x y", id="space"),
        pytest.param("", id="empty"),
        pytest.param("a\nb", id="newline"),
        pytest.param("if", id="keyword-if"),
        pytest.param("in", id="keyword-in"),
        pytest.param("true", id="keyword-true"),
    ],
)
def test_a_bad_argument_name_is_a_config_error_naming_the_setting(name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        schema_text({"fine": "String", name: "String"})
    assert caught.value.reason == "config_error"
    assert "policy.arguments" in caught.value.detail


@pytest.mark.parametrize("kind", ["Float", "string", "Set<Bool>", "Decimal", "Long?", "String }; entity X {"])
def test_a_bad_argument_type_is_a_config_error_naming_the_argument(kind: str) -> None:
    with pytest.raises(ConfigError) as caught:
        schema_text({"amount": kind})
    assert "policy.arguments.amount" in caught.value.detail


def test_a_policy_reading_an_undeclared_argument_fails_validation() -> None:
    guarded = 'permit (principal, action, resource) when { context has arguments && context.arguments has region && context.arguments.region == "eu" };'  # noqa: E501
    unguarded = (
        'permit (principal, action, resource) when { context has arguments && context.arguments.region == "eu" };'
    )
    assert validate(guarded, {"region": "String"}).validation_passed  # the control: declared, it validates
    assert not validate(unguarded, {"amount": "Long"}).validation_passed
    with pytest.raises(PolicyError):  # guarded by has, Cedar passes it; the engine does not
        compile_policies([PolicySource("p.cedar", guarded)], {"amount": "Long"})


@pytest.mark.parametrize(
    "condition",
    [
        pytest.param('context.arguments has regoin && context.arguments.regoin == "apac"', id="argument-typo"),
        pytest.param('context has arguments.regoin && context.arguments.regoin == "apac"', id="has-path-typo"),
        pytest.param('context.arguments has "regoin"', id="quoted-attribute"),
        pytest.param("context has argumnets", id="context-typo"),
        pytest.param("resource has readonly && resource.readonly", id="entity-attribute-typo"),
        pytest.param("context.network has adress", id="record-attribute-typo"),
    ],
)
def test_a_has_test_of_an_undeclared_attribute_is_refused(condition: str) -> None:
    """Cedar's validator types such a test as always false and passes it: a typo would silently switch the
    forbid off. The engine refuses it."""
    forbid = f'@id("no-apac") forbid (principal, action, resource) when {{ context has arguments && {condition} }};'
    with pytest.raises(PolicyError) as caught:
        compile_policies([PolicySource("residency.cedar", forbid)], {"region": "String"})
    assert caught.value.reason == "policy_invalid"
    assert "residency.cedar: no-apac" in caught.value.detail
    # The control: the same rule spelt right compiles and denies.
    right = '@id("no-apac") forbid (principal, action, resource) when { context has arguments && context.arguments has region && context.arguments.region == "apac" };'  # noqa: E501
    permit = "permit (principal, action, resource);"
    engine = compile_policies([PolicySource("residency.cedar", f"{permit}\n{right}")], {"region": "String"})
    caller = entities.Caller(Principal("alice", "iss", "bearer"), "127.0.0.1", tls=True)
    tool = entities.ToolFacts("s", "t", frozenset())
    decision = engine.decide(entities.tool_query(caller, tool, {"region": "apac"}))
    assert (decision.allowed, decision.reason, decision.policies) == (False, "policy_forbid", ("no-apac",))


def test_has_tests_of_every_declared_attribute_compile() -> None:
    policy = """
    permit (principal, action, resource) when {
      principal has username && principal has issuer && principal has auth &&
      resource has name && resource has server && resource has read_only && resource has destructive &&
      resource has idempotent && resource has open_world && resource has scopes && resource has uri &&
      context has client_id && context has scopes && context has network && context has time &&
      context.network has address && context.network has tls && context.network has mtls &&
      context.time has hour && context.time has weekday &&
      context has arguments && context.arguments has amount
    };
    """
    assert compile_policies([PolicySource("p.cedar", policy)], {"amount": "Long"}).count == 1


def test_a_has_test_on_a_literal_record_is_left_to_cedar() -> None:
    policy = 'permit (principal, action, resource) when { {"a": 1} has b || context has client_id };'
    assert compile_policies([PolicySource("p.cedar", policy)], {}).count == 1


def test_a_policy_using_an_argument_as_another_type_fails_validation() -> None:
    policy = 'permit (principal, action, resource) when { context has arguments && context.arguments has amount && context.arguments.amount == "5" };'  # noqa: E501
    assert not validate(policy, {"amount": "Long"}).validation_passed


def test_every_query_entities_builds_matches_the_schema() -> None:
    """The schema is the single description of what the gateway sends to Cedar."""
    engine = compile_policies([PolicySource("all.cedar", "permit (principal, action, resource);")], ARGUMENTS)
    principal = Principal(
        "alice",
        "https://issuer",
        "bearer",
        client_id="claude",
        scopes=frozenset({"s.read", "s.write"}),
        roles=frozenset({"analyst", "admin"}),
        preferred_username="Alice",
    )
    caller = entities.Caller(principal, "10.1.2.3", tls=True)
    mtls = entities.Caller(Principal("device-7", "mtls", "mtls"), "::1", tls=True)
    tool = entities.ToolFacts("s", "t", frozenset({"s.write"}), read_only=False, destructive=True)
    arguments: dict[str, JSONValue] = {"amount": 5, "region": "eu", "tags": ["a", "b"], "ids": [1, 2], "dry_run": True}
    queries = [
        entities.tool_query(caller, tool, arguments, now=0.0),
        entities.tool_query(caller, tool, {}, now=0.0),
        entities.tool_query(mtls, tool, None, now=0.0),
        entities.resource_query(caller, "s", "s://schema", frozenset({"s.read"}), now=0.0),
        entities.prompt_query(caller, "s", "p", frozenset(), {"region": "eu"}, now=0.0),
        entities.prompt_query(caller, "s", "p", frozenset(), None, now=0.0),
        *(entities.list_query(caller, "s", method, now=0.0) for method in LIST_ACTIONS),
        entities.grant_query(principal, "s.read", "claude"),
    ]
    for query in queries:
        decision = engine.decide(query)
        assert (decision.allowed, decision.errors) == (True, ()), query.request
