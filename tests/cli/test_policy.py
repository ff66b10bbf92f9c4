"""``mcp-bastion policy``: validate, schema and test, on a configuration like the demo's."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

from typer.testing import CliRunner

from mcp_bastion.cli.demo import DEMO_POLICY
from mcp_bastion.cli.main import app

DEMO_CASES: Final = DEMO_POLICY.parent / "demo-cases.toml"
TYPO: Final = 'permit (principal, action == Action::"tools/call", resource) when { resource.readonly };\n'


def config(tmp_path: Path, files: list[Path] | None = None) -> Path:
    """The demo's upstream, scopes, policy and arguments (an https upstream: nothing is started)."""
    path = tmp_path / "bastion.toml"
    listed = ", ".join(f'"{file}"' for file in (files if files is not None else [DEMO_POLICY]))
    path.write_text(
        f'[server]\nstate_dir = "{tmp_path / "state"}"\n'
        '[upstreams.customers]\nurl = "https://customers.internal/mcp"\n'
        '[upstreams.customers.scopes]\n"customers.read" = "r"\n"customers.write" = "w"\n"customers.delete" = "d"\n'
        f"[policy]\nfiles = [{listed}]\n"
        'arguments = { customer_id = "String", region = "String" }\n'
    )
    return path


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["policy", *args])
    return result.exit_code, result.output


def broken(tmp_path: Path) -> Path:
    path = tmp_path / "broken.cedar"
    path.write_text(TYPO)
    return path


# -- validate ------------------------------------------------------------------------------------------


def test_validate_the_demo_policy(tmp_path: Path) -> None:
    code, output = run("validate", "-c", str(config(tmp_path)))
    assert code == 0, output
    assert re.search(r"ok: policy [0-9a-f]{12}: 8 policies", output)
    assert "WARNING" not in output


def test_validate_a_broken_policy_exits_2_naming_the_file(tmp_path: Path) -> None:
    code, output = run("validate", "-c", str(config(tmp_path, [DEMO_POLICY, broken(tmp_path)])))
    assert code == 2
    assert "broken.cedar" in output
    assert "readonly" in output


def test_validate_named_files_instead_of_the_configured_ones(tmp_path: Path) -> None:
    code, output = run("validate", "-c", str(config(tmp_path)), "-p", str(broken(tmp_path)))
    assert code == 2
    assert "broken.cedar" in output


def test_validate_warns_about_an_empty_set(tmp_path: Path) -> None:
    empty = tmp_path / "empty.cedar"
    empty.write_text("// nothing yet\n")
    code, output = run("validate", "-c", str(config(tmp_path, [empty])))
    assert code == 0, output
    assert "WARNING: no policies" in output
    assert ": 0 policies" in output


def test_validate_a_missing_file_exits_2(tmp_path: Path) -> None:
    code, output = run("validate", "-c", str(config(tmp_path, [tmp_path / "absent.cedar"])))
    assert code == 2
    assert "absent.cedar" in output


def test_validate_checks_arguments_against_the_declarations(tmp_path: Path) -> None:
    amount = tmp_path / "amount.cedar"
    amount.write_text(
        "forbid (principal, action, resource)\n"
        "when { context has arguments && context.arguments has amount && context.arguments.amount > 5 };\n"
    )
    code, output = run("validate", "-c", str(config(tmp_path, [amount])))
    assert code == 2  # the demo declares customer_id and region only
    assert "amount" in output


# -- schema --------------------------------------------------------------------------------------------


def test_schema_prints_the_schema_with_the_arguments(tmp_path: Path) -> None:
    code, output = run("schema", "-c", str(config(tmp_path)))
    assert code == 0, output
    assert "entity User in [Role]" in output
    assert 'action "tools/call" appliesTo' in output
    assert "customer_id?: String," in output
    assert "region?: String," in output


# -- test ----------------------------------------------------------------------------------------------


def test_the_shipped_demo_table_passes(tmp_path: Path) -> None:
    code, output = run("test", str(DEMO_CASES), "-c", str(config(tmp_path)))
    assert code == 0, output
    assert "23 passed, 0 failed" in output
    assert "FAIL" not in output
    assert "analyst-no-apac" in output  # the deciding policies are shown


def test_a_wrong_expectation_exits_1_and_shows_fail(tmp_path: Path) -> None:
    text = DEMO_CASES.read_text()
    wrong = text.replace(
        'arguments = { region = "apac" }\nexpect = "deny"', 'arguments = { region = "apac" }\nexpect = "allow"', 1
    )
    assert wrong != text
    cases = tmp_path / "cases.toml"
    cases.write_text(wrong)
    code, output = run("test", str(cases), "-c", str(config(tmp_path)))
    assert code == 1
    assert "22 passed, 1 failed" in output
    assert "FAIL" in output


def test_a_wrong_listed_expectation_exits_1(tmp_path: Path) -> None:
    text = DEMO_CASES.read_text()
    wrong = text.replace("listed = true", "listed = false", 1)
    assert wrong != text
    cases = tmp_path / "cases.toml"
    cases.write_text(wrong)
    code, output = run("test", str(cases), "-c", str(config(tmp_path)))
    assert code == 1
    assert "22 passed, 1 failed" in output
    assert "(expected false)" in output


def test_the_demo_table_against_a_broken_policy_exits_2(tmp_path: Path) -> None:
    code, output = run("test", str(DEMO_CASES), "-c", str(config(tmp_path, [DEMO_POLICY, broken(tmp_path)])))
    assert code == 2
    assert "broken.cedar" in output
    code, output = run("test", str(DEMO_CASES), "-c", str(config(tmp_path)), "-p", str(broken(tmp_path)))
    assert code == 2


def test_the_demo_table_against_another_policy_fails(tmp_path: Path) -> None:
    """The control: the table really depends on the policy (an empty set allows nothing)."""
    empty = tmp_path / "empty.cedar"
    empty.write_text("")
    code, output = run("test", str(DEMO_CASES), "-c", str(config(tmp_path)), "-p", str(empty))
    assert code == 1
    assert "FAIL" in output


def test_a_malformed_table_exits_2(tmp_path: Path) -> None:
    cases = tmp_path / "cases.toml"
    cases.write_text('[[case]]\nuser = "alice"\naction = "tools/call"\nexpect = "maybe"\n')
    code, output = run("test", str(cases), "-c", str(config(tmp_path)))
    assert code == 2
    assert "expect" in output


def test_a_case_naming_an_unknown_server_exits_2(tmp_path: Path) -> None:
    cases = tmp_path / "cases.toml"
    cases.write_text('[[case]]\nuser = "alice"\nserver = "nope"\naction = "tools/list"\nexpect = "deny"\n')
    code, output = run("test", str(cases), "-c", str(config(tmp_path)))
    assert code == 2
    assert "nope" in output
