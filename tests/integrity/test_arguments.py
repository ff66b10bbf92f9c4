"""``integrity.arguments``: calls checked against the pinned inputSchema, strictly."""

from __future__ import annotations

import pytest

from mcp_bastion.errors import InvalidArguments
from mcp_bastion.integrity.arguments import ArgumentChecker, check_size, closed
from mcp_bastion.jsonrpc.message import JSONValue

SCHEMA: dict[str, JSONValue] = {
    "type": "object",
    "properties": {
        "customer_id": {"type": "string", "pattern": "^C[0-9]{3}$"},
        "email": {"type": "string", "format": "email"},
        "filters": {"type": "object", "properties": {"region": {"enum": ["eu", "us"]}}},
    },
    "required": ["customer_id"],
}


def refusal(arguments: dict[str, JSONValue], schema: JSONValue = SCHEMA) -> InvalidArguments:
    with pytest.raises(InvalidArguments) as refused:
        ArgumentChecker().check("t", "d", schema, arguments)
    return refused.value


def test_valid_arguments_pass() -> None:
    ArgumentChecker().check(
        "t", "d", SCHEMA, {"customer_id": "C001", "email": "a@b.example", "filters": {"region": "eu"}}
    )


@pytest.mark.parametrize(
    ("arguments", "path"),
    [
        pytest.param({}, "/", id="missing-required"),
        pytest.param({"customer_id": 7}, "/customer_id", id="wrong-type"),
        pytest.param({"customer_id": "C1"}, "/customer_id", id="pattern"),
        pytest.param({"customer_id": "C001", "email": "not an email"}, "/email", id="format-checked"),
        pytest.param({"customer_id": "C001", "debug": True}, "/", id="undeclared-argument"),
        pytest.param({"customer_id": "C001", "filters": {"region": "eu", "x": 1}}, "/filters", id="nested-undeclared"),
    ],
)
def test_violations_name_the_path_and_never_the_value(arguments: dict[str, JSONValue], path: str) -> None:
    refused = refusal(arguments)
    assert refused.reason == "arguments_invalid"
    assert f"at {path} " in refused.detail
    assert refused.public_data() == {"path": path}
    assert "not an email" not in refused.detail


def test_an_explicit_open_schema_stays_open() -> None:
    schema: dict[str, JSONValue] = {**SCHEMA, "additionalProperties": True}
    ArgumentChecker().check("t", "d2", schema, {"customer_id": "C001", "anything": 1})


def test_composed_schemas_are_not_closed_blindly() -> None:
    schema = {"allOf": [{"type": "object", "properties": {"a": {"type": "string"}}}], "properties": {"a": {}}}
    assert "additionalProperties" not in closed(schema)


def test_a_remote_ref_is_never_fetched_and_refuses_the_tool() -> None:
    refused = refusal({"x": 1}, {"$ref": "http://169.254.169.254/latest/meta-data/schema.json"})
    assert refused.reason == "tool_schema_unusable"


def test_a_schema_that_is_not_an_object_refuses_the_tool() -> None:
    assert refusal({}, "not a schema").reason == "tool_schema_unusable"


def test_arguments_over_the_size_limit_are_refused_before_the_schema() -> None:
    check_size("t", {"text": "x" * 100}, max_bytes=200)
    with pytest.raises(InvalidArguments) as refused:
        check_size("t", {"text": "x" * 300}, max_bytes=200)
    assert refused.value.reason == "arguments_too_large"


def test_arguments_nested_deeper_than_the_limit_are_refused() -> None:
    nested: JSONValue = "leaf"
    for _ in range(5):
        nested = {"a": nested}
    check_size("t", {"x": nested}, max_depth=6)  # the arguments object itself is level 1
    with pytest.raises(InvalidArguments) as refused:
        check_size("t", {"x": [nested]}, max_depth=6)
    assert refused.value.reason == "arguments_too_deep"
    # Many flat containers are not depth.
    check_size("t", {"rows": [[1], [2], [3], [4], [5], [6], [7]]}, max_depth=3)
