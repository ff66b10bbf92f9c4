"""Tests of ``policy.cases``: a case table is read strictly (a typo must not make a case test nothing) and
decided by the same authorizer the gateway uses."""

from __future__ import annotations

from pathlib import Path
from typing import Final

import pytest

from mcp_bastion.cli.demo import DEMO_ARGUMENTS, DEMO_POLICY
from mcp_bastion.errors import ConfigError
from mcp_bastion.policy.authorizer import Authorizer
from mcp_bastion.policy.cases import load_cases, run_cases
from mcp_bastion.policy.catalog import ServerScopes, ToolCatalog
from mcp_bastion.policy.store import PolicyStore

DEMO_CASES: Final = DEMO_POLICY.parent / "demo-cases.toml"
OFFERED: Final = frozenset({"customers.read", "customers.write", "customers.delete"})
GOOD: Final = """
[[case]]
user = "alice"
roles = ["analyst"]
scopes = ["customers.read"]
server = "customers"
action = "tools/call"
tool = "get_customer"
annotations = { readOnlyHint = true }
expect = "allow"
"""


def table(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cases.toml"
    path.write_text(text)
    return path


@pytest.fixture
def authorizer() -> Authorizer:
    store = PolicyStore([DEMO_POLICY], DEMO_ARGUMENTS, watch=False)
    return Authorizer(store, ToolCatalog({"customers": ServerScopes(OFFERED, "customers")}), DEMO_ARGUMENTS)


def test_a_good_table_loads(tmp_path: Path) -> None:
    cases = load_cases(table(tmp_path, GOOD + GOOD.replace('"alice"', '"bob"')))
    assert [case["user"] for case in cases] == ["alice", "bob"]


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(GOOD.replace("tool =", "tol ="), id="unknown-key"),
        pytest.param(GOOD.replace('expect = "allow"', 'expect = "allowed"'), id="bad-expect"),
        pytest.param(GOOD.replace('expect = "allow"', "expect = true"), id="expect-not-a-string"),
        pytest.param(GOOD.replace('expect = "allow"', ""), id="no-expect"),
        pytest.param(GOOD.replace('user = "alice"', ""), id="no-user"),
        pytest.param(GOOD.replace('action = "tools/call"', ""), id="no-action"),
        pytest.param('title = "x"\n' + GOOD, id="top-level-key"),
        pytest.param(GOOD + "[extra]\nx = 1\n", id="other-table"),
        pytest.param(GOOD + "arguments = []\n", id="arguments-not-a-table"),
        pytest.param(GOOD.replace("annotations = { readOnlyHint = true }", 'annotations = "ro"'), id="annotations"),
        pytest.param(GOOD + 'listed = "yes"\n', id="listed-not-a-bool"),
        pytest.param("", id="empty"),
        pytest.param("case = 1\n", id="case-not-a-list"),
        pytest.param("case = [1, 2]\n", id="cases-not-tables"),
        pytest.param("case = []\n", id="no-cases"),
        pytest.param("[[case]\n", id="not-toml"),
    ],
)
def test_a_malformed_table_is_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_cases(table(tmp_path, text))
    assert caught.value.reason == "config_error"


def test_a_missing_or_undecodable_table_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_cases(tmp_path / "absent.toml")
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[[case]]\nuser = "\xe9"\n')
    with pytest.raises(ConfigError):
        load_cases(path)


def test_the_shipped_demo_table_passes(authorizer: Authorizer) -> None:
    results = run_cases(load_cases(DEMO_CASES), authorizer)
    assert len(results) == 23
    assert [result.name for result in results if not result.passed] == []
    outcomes = {result.got for result in results}
    assert outcomes == {"allow", "deny", "insufficient_scope", "invalid"}  # the table exercises every outcome


def test_a_wrong_expectation_fails_and_says_what_was_decided(tmp_path: Path, authorizer: Authorizer) -> None:
    cases = load_cases(table(tmp_path, GOOD.replace('"allow"', '"deny"')))
    [result] = run_cases(cases, authorizer)
    assert (result.passed, result.expected, result.got, result.policies) == (
        False,
        "deny",
        "allow",
        ("analyst-read-only-tools",),
    )


def test_a_wrong_listed_expectation_fails(tmp_path: Path, authorizer: Authorizer) -> None:
    [listed] = run_cases(load_cases(table(tmp_path, GOOD + "listed = true\n")), authorizer)
    assert (listed.passed, listed.listed_got) == (True, True)
    [unlisted] = run_cases(load_cases(table(tmp_path, GOOD + "listed = false\n")), authorizer)
    assert (unlisted.passed, unlisted.listed_got) == (False, True)


@pytest.mark.parametrize(
    ("changes", "got"),
    [
        pytest.param({'roles = ["analyst"]': "roles = []"}, "deny", id="no-role"),
        pytest.param({'scopes = ["customers.read"]': "scopes = []"}, "insufficient_scope", id="no-scope"),
        pytest.param({"annotations = { readOnlyHint = true }": ""}, "invalid", id="never-listed"),
        pytest.param({'tool = "get_customer"': 'tool = "get_customer"\narguments = { region = 7 }'}, "deny", id="type"),
        pytest.param(
            {'tool = "get_customer"': 'tool = "get_customer"\narguments = { region = "apac" }'}, "deny", id="forbid"
        ),
    ],
)
def test_each_outcome(tmp_path: Path, authorizer: Authorizer, changes: dict[str, str], got: str) -> None:
    text = GOOD
    for old, new in changes.items():
        text = text.replace(old, new)
    [result] = run_cases(load_cases(table(tmp_path, text)), authorizer)
    assert result.got == got


def test_an_unknown_server_is_a_config_error(tmp_path: Path, authorizer: Authorizer) -> None:
    with pytest.raises(ConfigError):
        run_cases(load_cases(table(tmp_path, GOOD.replace('server = "customers"', 'server = "nope"'))), authorizer)


def test_scopes_must_be_a_list_of_strings(tmp_path: Path, authorizer: Authorizer) -> None:
    with pytest.raises(ConfigError):
        run_cases(load_cases(table(tmp_path, GOOD.replace('["customers.read"]', '"customers.read"'))), authorizer)
    with pytest.raises(ConfigError):
        run_cases(load_cases(table(tmp_path, GOOD.replace('["customers.read"]', "[1]"))), authorizer)


def test_grant_scope_cases(tmp_path: Path, authorizer: Authorizer) -> None:
    text = (
        '[[case]]\nuser = "bob"\nroles = ["admin"]\naction = "grant_scope"\nscope = "customers.delete"\n'
        'expect = "allow"\n'
    )
    [admin] = run_cases(load_cases(table(tmp_path, text)), authorizer)
    assert (admin.passed, admin.policies) == (True, ("grant-write-and-delete-to-admins",))
    [analyst] = run_cases(load_cases(table(tmp_path, text.replace('"admin"', '"analyst"'))), authorizer)
    assert (analyst.passed, analyst.got) == (False, "deny")
