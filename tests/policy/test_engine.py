"""Tests of ``policy.engine``: compiling a policy set (refusing bad ones), Cedar's semantics (default deny,
forbid wins), the labels decisions cite, the decision cache, and failing closed on anything unusual."""

from __future__ import annotations

from collections.abc import Callable

import cedarpy
import pytest

from mcp_bastion.exchange import Principal
from mcp_bastion.jsonrpc.message import JSONValue
from mcp_bastion.policy import entities
from mcp_bastion.policy.engine import Decision, PolicyEngine, PolicyError, PolicySource, compile_policies
from mcp_bastion.policy.schema import schema_text

PERMIT_ALL = "permit (principal, action, resource);"
OVERFLOWING_FORBID = """
@id("overflowing-forbid")
forbid (principal, action == Action::"tools/call", resource)
when { context has arguments && context.arguments has amount
       && context.arguments.amount + 9223372036854775807 > 0 };
"""

ALICE = entities.Caller(
    Principal("alice", "https://issuer", "bearer", scopes=frozenset({"s.read"}), roles=frozenset({"analyst"})),
    "10.0.0.1",
    tls=True,
)
BOB = entities.Caller(Principal("bob", "https://issuer", "bearer", roles=frozenset({"admin"})), "10.0.0.2", tls=True)
TOOL = entities.ToolFacts("s", "t", frozenset({"s.read"}), read_only=True, destructive=False)


def engine_of(*texts: str, arguments: dict[str, str] | None = None) -> PolicyEngine:
    sources = [PolicySource(f"file{index}.cedar", text) for index, text in enumerate(texts)]
    return compile_policies(sources, arguments or {})


def call(
    engine: PolicyEngine, caller: entities.Caller = ALICE, arguments: dict[str, JSONValue] | None = None
) -> Decision:
    return engine.decide(entities.tool_query(caller, TOOL, arguments, now=0.0))


# -- compiling ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("permit (principal, action, resource", id="unclosed"),
        pytest.param("allow (principal, action, resource);", id="not-an-effect"),
        pytest.param('permit (principal, action, resource) when { resource.name == "x" ;', id="unclosed-when"),
    ],
)
def test_a_policy_that_does_not_parse_is_refused_naming_the_file(text: str) -> None:
    with pytest.raises(PolicyError) as caught:
        compile_policies([PolicySource("good.cedar", PERMIT_ALL), PolicySource("broken.cedar", text)], {})
    assert caught.value.reason == "policy_invalid"
    assert caught.value.detail.startswith("broken.cedar: ")


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(
            'permit (principal, action == Action::"tools/call", resource) when { resource.readonly };', id="attribute"
        ),
        pytest.param('permit (principal, action == Action::"tools/cal", resource);', id="action"),
        pytest.param('permit (principal == Usr::"alice", action, resource);', id="entity-type"),
        pytest.param("permit (principal, action, resource) when { principal.username == 1 };", id="type"),
    ],
)
def test_a_policy_that_does_not_validate_is_refused_naming_the_file(text: str) -> None:
    with pytest.raises(PolicyError) as caught:
        compile_policies([PolicySource("good.cedar", PERMIT_ALL), PolicySource("typo.cedar", text)], {})
    assert caught.value.reason == "policy_invalid"
    assert caught.value.detail.startswith("typo.cedar: ")


def test_the_readonly_typo_is_named_in_the_error() -> None:
    text = 'permit (principal, action == Action::"tools/call", resource) when { resource.readonly };'
    with pytest.raises(PolicyError) as caught:
        compile_policies([PolicySource("typo.cedar", text)], {})
    assert "readonly" in caught.value.detail
    # The control: spelt right, it compiles.
    assert engine_of(text.replace("readonly", "read_only")).count == 1


def test_templates_are_refused() -> None:
    with pytest.raises(PolicyError) as caught:
        compile_policies([PolicySource("t.cedar", "permit (principal == ?principal, action, resource);")], {})
    assert caught.value.detail.startswith("t.cedar: ")
    assert "template" in caught.value.detail


def test_an_empty_set_compiles_and_denies_everything() -> None:
    engine = compile_policies([], {})
    assert engine.count == 0
    for caller in (ALICE, BOB):
        decision = call(engine, caller)
        assert (decision.allowed, decision.reason, decision.policies, decision.errors) == (
            False,
            "policy_no_permit",
            (),
            (),
        )
    grant = engine.decide(entities.grant_query(ALICE.principal, "s.read", "c"))
    assert (grant.allowed, grant.reason) == (False, "policy_no_permit")


def test_files_of_only_comments_compile_to_an_empty_set() -> None:
    engine = engine_of("// nothing here yet\n", "")
    assert engine.count == 0
    assert call(engine).reason == "policy_no_permit"


# -- semantics and labels ------------------------------------------------------------------------------


def test_a_permit_allows_and_names_itself() -> None:
    engine = engine_of('@id("analysts") permit (principal in Role::"analyst", action, resource);')
    allowed = call(engine, ALICE)
    assert (allowed.allowed, allowed.reason, allowed.policies) == (True, "policy_allow", ("analysts",))
    denied = call(engine, BOB)
    assert (denied.allowed, denied.reason, denied.policies) == (False, "policy_no_permit", ())


def test_forbid_overrides_permit_and_names_the_forbid() -> None:
    engine = engine_of(
        '@id("everyone") permit (principal, action, resource);\n'
        '@id("no-analysts") forbid (principal in Role::"analyst", action, resource);'
    )
    decision = call(engine, ALICE)
    assert (decision.allowed, decision.reason, decision.policies) == (False, "policy_forbid", ("no-analysts",))
    assert call(engine, BOB).allowed  # the control: the forbid does not match bob


def test_labels_are_the_id_annotation_else_file_and_position_across_files() -> None:
    first = (
        'permit (principal == User::"nobody", action, resource);\n'  # file0.cedar#policy0: never matches
        'forbid (principal == User::"alice", action, resource);\n'  # file0.cedar#policy1
    )
    second = (
        'forbid (principal == User::"bob", action, resource);\n'  # file1.cedar#policy0
        '@id("alice-forbidden-too") forbid (principal == User::"alice", action, resource);\n'
        'forbid (principal in Role::"admin", action, resource);\n'  # file1.cedar#policy2
        "permit (principal, action, resource);\n"  # file1.cedar#policy3
    )
    engine = engine_of(first, second)
    assert engine.count == 6
    alice = call(engine, ALICE)
    assert (alice.reason, sorted(alice.policies)) == ("policy_forbid", ["alice-forbidden-too", "file0.cedar#policy1"])
    bob = call(engine, BOB)
    assert (bob.reason, sorted(bob.policies)) == ("policy_forbid", ["file1.cedar#policy0", "file1.cedar#policy2"])
    carol = call(engine, entities.Caller(Principal("carol", "i", "bearer"), "10.0.0.3", tls=True))
    assert (carol.allowed, carol.policies) == (True, ("file1.cedar#policy3",))


def test_version_is_a_digest_of_the_texts() -> None:
    one = engine_of(PERMIT_ALL)
    assert engine_of(PERMIT_ALL).version == one.version
    assert engine_of(PERMIT_ALL + "\n// changed").version != one.version
    assert engine_of("forbid (principal, action, resource);").version != one.version


# -- the decision cache --------------------------------------------------------------------------------


def counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count Cedar evaluations (the real ones still happen)."""
    calls = [0]
    real: Callable[..., cedarpy.AuthzResult] = cedarpy.is_authorized

    def wrapper(*args: object, **kwargs: object) -> cedarpy.AuthzResult:
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(cedarpy, "is_authorized", wrapper)
    return calls


def test_the_cache_returns_the_same_decision_without_evaluating_again(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = engine_of('@id("analysts") permit (principal in Role::"analyst", action, resource);')
    calls = counting(monkeypatch)
    first = call(engine)
    second = call(engine)
    assert first == second == Decision(True, ("analysts",))
    assert calls[0] == 1
    other = call(engine, BOB)  # another key: evaluated, and decided on its own
    assert (other.allowed, calls[0]) == (False, 2)


def test_the_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = PolicyEngine(
        cedarpy.PolicySet.from_str(PERMIT_ALL),
        cedarpy.Schema.from_str(schema_text({})),
        {},
        version="v",
        count=1,
        cache_size=2,
    )
    calls = counting(monkeypatch)
    callers = [entities.Caller(Principal(name, "i", "bearer"), "10.0.0.1", tls=True) for name in ("a", "b", "c")]
    for caller in callers:
        assert call(engine, caller).allowed
    assert calls[0] == 3
    call(engine, callers[2])  # still cached
    assert calls[0] == 3
    call(engine, callers[0])  # the oldest was dropped to keep two
    assert calls[0] == 4


# -- failing closed ------------------------------------------------------------------------------------


def test_an_evaluation_error_in_a_forbid_denies() -> None:
    """Cedar skips a policy whose evaluation errors, so plain Cedar would *allow* here (the permit-all
    matches, the erroring forbid is ignored). The engine denies."""
    engine = engine_of(PERMIT_ALL, OVERFLOWING_FORBID, arguments={"amount": "Long"})
    decision = call(engine, arguments={"amount": 5})
    assert (decision.allowed, decision.reason) == (False, "policy_error")
    assert decision.errors
    assert "overflowing-forbid" in decision.errors[0]  # the error names the policy by its label
    assert decision.policies == ()  # the permit-all did not decide this denial
    # What plain Cedar says for the same request: allow, with the error only in the diagnostics.
    query = entities.tool_query(ALICE, TOOL, {"amount": 5}, now=0.0)
    plain = cedarpy.is_authorized(
        query.request,
        cedarpy.PolicySet.from_str(PERMIT_ALL + OVERFLOWING_FORBID),
        query.entities,
        cedarpy.Schema.from_str(schema_text({"amount": "Long"})),
    )
    assert plain.decision == cedarpy.Decision.Allow
    assert plain.diagnostics.errors
    # The control: without the overflowing argument the forbid evaluates (to false) and the call is allowed.
    assert call(engine, arguments={"amount": -9223372036854775807}).allowed
    assert call(engine, arguments={}).allowed


def test_an_evaluation_error_in_a_permit_denies_too() -> None:
    engine = engine_of(
        '@id("overflowing-permit") permit (principal, action, resource) when { context has arguments && '
        "context.arguments has amount && context.arguments.amount + 9223372036854775807 > 0 };",
        arguments={"amount": "Long"},
    )
    decision = call(engine, arguments={"amount": 5})
    assert (decision.allowed, decision.reason) == (False, "policy_error")


def test_a_forbid_that_matches_beside_an_erroring_policy_is_named() -> None:
    engine = engine_of(
        PERMIT_ALL,
        OVERFLOWING_FORBID,
        '@id("no-alice") forbid (principal == User::"alice", action, resource);',
        arguments={"amount": "Long"},
    )
    decision = call(engine, arguments={"amount": 5})
    assert (decision.allowed, decision.reason, decision.policies) == (False, "policy_error", ("no-alice",))


@pytest.mark.parametrize(
    "arguments",
    [
        pytest.param({"amount": "5000"}, id="string-for-long"),
        pytest.param({"amount": True}, id="bool-for-long"),
        pytest.param({"amount": [1]}, id="list-for-long"),
        pytest.param({"region": 7}, id="long-for-string"),
        pytest.param({"region": ["eu"]}, id="list-for-string"),
        pytest.param({"tags": "x"}, id="string-for-set"),
        pytest.param({"tags": [1]}, id="long-in-set-of-string"),
    ],
)
def test_a_request_that_does_not_match_the_schema_is_denied(arguments: dict[str, JSONValue]) -> None:
    engine = engine_of(PERMIT_ALL, arguments={"amount": "Long", "region": "String", "tags": "Set<String>"})
    assert call(engine, arguments={"amount": 1, "region": "eu", "tags": ["x"]}).allowed  # the control
    decision = call(engine, arguments=arguments)
    assert (decision.allowed, decision.reason) == (False, "policy_error")
    assert decision.errors


def test_an_exception_from_cedar_denies(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = engine_of(PERMIT_ALL)

    def broken(*args: object, **kwargs: object) -> cedarpy.AuthzResult:
        raise RuntimeError("engine exploded")

    monkeypatch.setattr(cedarpy, "is_authorized", broken)
    decision = call(engine)
    assert (decision.allowed, decision.reason) == (False, "policy_error")
    assert decision.errors == ("engine: RuntimeError",)


def test_a_result_that_is_neither_allow_nor_deny_denies(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = engine_of(PERMIT_ALL)

    class Undecided:
        decision = cedarpy.Decision.NoDecision
        diagnostics = cedarpy.Diagnostics({"reason": [], "errors": []})

    monkeypatch.setattr(cedarpy, "is_authorized", lambda *args, **kwargs: Undecided())
    decision = call(engine)
    assert (decision.allowed, decision.reason) == (False, "policy_error")
