"""Property tests of ``integrity.arguments``: for real-world tool input schemas (the reference servers
mcp-server-fetch, -git, -time, -filesystem, and this project's demo servers), every argument object
``hypothesis-jsonschema`` generates from the schema as the gateway reads it (closed to undeclared
properties) is accepted, and every mutation of one — an undeclared property, a value of the wrong type, a
required property left out, a value nested too deep — is refused as ``arguments_invalid``."""

from __future__ import annotations

import functools
import json
import types
from collections.abc import Iterator
from typing import Any, Final

import hypothesis.internal.conjecture.utils as conjecture
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import _from_schema, from_schema

from mcp_bastion.demo.customers import CustomerRef, EmailUpdate, ExportArgs, SearchArgs
from mcp_bastion.demo.echo import ECHO_TOOL
from mcp_bastion.errors import InvalidArguments
from mcp_bastion.integrity.arguments import MAX_ARGUMENT_DEPTH, ArgumentChecker, check_size, closed
from mcp_bastion.jsonrpc.message import JSONValue
from tests.conformance.upstream import JSON_SCHEMA_2020_12_INPUT, SEP1034_SCHEMA

PROPERTY = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

STRING: Final = {"type": "string"}
OPTIONAL_STRING: Final = {"anyOf": [STRING, {"type": "null"}], "default": None}
DRAFT_07: Final = "http://json-schema.org/draft-07/schema#"

# mcp-server-fetch (pydantic v2 output of its ``Fetch`` model).
FETCH: Final = {
    "description": "Parameters for fetching a URL.",
    "properties": {
        "url": {"description": "URL to fetch", "format": "uri", "minLength": 1, "title": "Url", "type": "string"},
        "max_length": {
            "default": 5000,
            "description": "Maximum number of characters to return.",
            "exclusiveMaximum": 1000000,
            "exclusiveMinimum": 0,
            "title": "Max Length",
            "type": "integer",
        },
        "start_index": {"default": 0, "minimum": 0, "title": "Start Index", "type": "integer"},
        "raw": {"default": False, "title": "Raw", "type": "boolean"},
    },
    "required": ["url"],
    "title": "Fetch",
    "type": "object",
}
# mcp-server-git.
GIT_LOG: Final = {
    "properties": {
        "repo_path": {"title": "Repo Path", "type": "string"},
        "max_count": {"default": 10, "title": "Max Count", "type": "integer"},
        "start_timestamp": OPTIONAL_STRING,
        "end_timestamp": OPTIONAL_STRING,
    },
    "required": ["repo_path"],
    "title": "GitLog",
    "type": "object",
}
GIT_ADD: Final = {
    "properties": {
        "repo_path": {"title": "Repo Path", "type": "string"},
        "files": {"items": STRING, "title": "Files", "type": "array"},
    },
    "required": ["repo_path", "files"],
    "title": "GitAdd",
    "type": "object",
}
GIT_DIFF: Final = {
    "properties": {
        "repo_path": {"title": "Repo Path", "type": "string"},
        "target": {"title": "Target", "type": "string"},
        "context_lines": {"default": 3, "title": "Context Lines", "type": "integer"},
    },
    "required": ["repo_path", "target"],
    "title": "GitDiff",
    "type": "object",
}
# mcp-server-time.
CONVERT_TIME: Final = {
    "type": "object",
    "properties": {
        "source_timezone": {"type": "string", "description": "Source IANA timezone name"},
        "time": {"type": "string", "description": "Time to convert in 24-hour format (HH:MM)"},
        "target_timezone": {"type": "string", "description": "Target IANA timezone name"},
    },
    "required": ["source_timezone", "time", "target_timezone"],
}
# @modelcontextprotocol/server-filesystem (zod-to-json-schema, draft-07).
READ_TEXT_FILE: Final = {
    "type": "object",
    "properties": {"path": STRING, "tail": {"type": "number"}, "head": {"type": "number"}},
    "required": ["path"],
    "additionalProperties": False,
    "$schema": DRAFT_07,
}
EDIT_FILE: Final = {
    "type": "object",
    "properties": {
        "path": STRING,
        "edits": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"oldText": STRING, "newText": STRING},
                "required": ["oldText", "newText"],
                "additionalProperties": False,
            },
        },
        "dryRun": {"type": "boolean", "default": False},
    },
    "required": ["path", "edits"],
    "additionalProperties": False,
    "$schema": DRAFT_07,
}
SEARCH_FILES: Final = {
    "type": "object",
    "properties": {
        "path": STRING,
        "pattern": STRING,
        "excludePatterns": {"type": "array", "items": STRING, "default": []},
    },
    "required": ["path", "pattern"],
    "additionalProperties": False,
    "$schema": DRAFT_07,
}

SCHEMAS: Final[dict[str, dict[str, Any]]] = {
    "fetch": FETCH,
    "git_log": GIT_LOG,
    "git_add": GIT_ADD,
    "git_diff": GIT_DIFF,
    "convert_time": CONVERT_TIME,
    "read_text_file": READ_TEXT_FILE,
    "edit_file": EDIT_FILE,
    "search_files": SEARCH_FILES,
    "demo_search_customers": SearchArgs.model_json_schema(),
    "demo_get_customer": CustomerRef.model_json_schema(),
    "demo_update_customer_email": EmailUpdate.model_json_schema(),
    "demo_export_report": ExportArgs.model_json_schema(),
    "demo_echo": dict(ECHO_TOOL.input_schema),
    "conformance_2020_12_refs": JSON_SCHEMA_2020_12_INPUT,
    "conformance_defaults": SEP1034_SCHEMA,
}

CHECKER: Final = ArgumentChecker()


class _ManyWithMore:
    """hypothesis-jsonschema 0.23.1 (the newest) drives ``conjecture.utils.many`` through ``more()``, which
    Hypothesis 6.150+ replaced by a context manager with iteration: the same protocol, re-expressed."""

    def __init__(self, data: Any, **sizes: Any) -> None:
        self._many = conjecture.many(data, **sizes)
        self._many.__enter__()
        self._elements = iter(self._many)

    def more(self) -> bool:
        if next(self._elements, False) is None:
            return True
        self._many.__exit__(None)
        return False

    def reject(self, why: str | None = None) -> None:
        self._many.reject(why)


@pytest.fixture(autouse=True, scope="module")
def _compatible_hypothesis_jsonschema() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        if not hasattr(conjecture.many, "more"):
            patch.setattr(_from_schema, "cu", types.SimpleNamespace(many=_ManyWithMore))
        yield


def check(tool: str, arguments: JSONValue) -> None:
    assert isinstance(arguments, dict)
    CHECKER.check(tool, f"digest-{tool}", SCHEMAS[tool], arguments)


def ecma(schema: Any) -> Any:
    """``schema`` with its patterns read as JSON Schema reads them (ECMA-262), for the generator, which reads
    them as Python does: there ``\\d`` matches any Unicode digit (``C00٠``), in ECMA-262 only 0-9."""
    if isinstance(schema, dict):
        return {
            key: value.replace("\\d", "[0-9]") if key == "pattern" and isinstance(value, str) else ecma(value)
            for key, value in schema.items()
        }
    return [ecma(item) for item in schema] if isinstance(schema, list) else schema


def _upper_a_label(arguments: JSONValue) -> bool:
    return isinstance(arguments, dict) and any(
        isinstance(value, str) and "xn--" in value.lower() and "xn--" not in value for value in arguments.values()
    )


@functools.cache
def valid(tool: str) -> st.SearchStrategy[JSONValue]:
    """Arguments valid for the schema as the gateway reads it: closed to undeclared properties. Emails with an
    upper-case IDN label (``a@b.XN--P1AI``) are left out: see ``test_known_gap_upper_case_idn_email``. They
    go over the wire first, as the gateway gets them: orjson reads an integer beyond 64 bits as a float."""
    strategy = from_schema(ecma(closed(SCHEMAS[tool]))).map(lambda arguments: orjson.loads(json.dumps(arguments)))
    return strategy.filter(lambda arguments: not _upper_a_label(arguments))


@pytest.mark.parametrize("tool", SCHEMAS)
@PROPERTY
@given(data=st.data())
def test_generated_valid_arguments_are_accepted(tool: str, data: st.DataObject) -> None:
    check(tool, data.draw(valid(tool), label="arguments"))


def _json_type(value: JSONValue) -> str:
    for kind, python in (("boolean", bool), ("integer", int), ("number", float), ("string", str), ("array", list)):
        if isinstance(value, python):
            return kind
    return "object" if isinstance(value, dict) else "null"


def _types(schema: dict[str, Any], root: dict[str, Any]) -> set[str]:
    """The JSON types a property's schema admits at its top level (empty: it admits any)."""
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        return _types(target, root)
    kinds = schema.get("type")
    if isinstance(kinds, str):
        return {kinds}
    if isinstance(kinds, list):
        return set(kinds)
    if "enum" in schema:
        return {_json_type(value) for value in schema["enum"]}
    found: set[str] = set()
    for branch in (*schema.get("anyOf", ()), *schema.get("oneOf", ())):
        found |= _types(branch, root)
    return found


def _wrong_value(allowed: set[str]) -> JSONValue:
    if "number" in allowed:
        allowed = allowed | {"integer"}
    candidates: list[JSONValue] = [12345, "text", 1.5, True, [], {}, None]
    return next(value for value in candidates if _json_type(value) not in allowed)


def _nested(depth: int) -> JSONValue:
    value: JSONValue = "leaf"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


MUTATIONS: Final = ("extra_property", "wrong_type", "missing_required", "too_deep")


@pytest.mark.parametrize("tool", SCHEMAS)
@PROPERTY
@given(data=st.data())
def test_mutated_arguments_are_refused(tool: str, data: st.DataObject) -> None:
    schema = SCHEMAS[tool]
    arguments = data.draw(valid(tool), label="valid")
    assert isinstance(arguments, dict)
    properties: dict[str, Any] = schema.get("properties", {})
    mutation = data.draw(st.sampled_from(MUTATIONS), label="mutation")
    if mutation == "extra_property":
        name = data.draw(st.text(min_size=1, max_size=20).filter(lambda n: n not in properties), label="name")
        arguments[name] = data.draw(from_schema({}), label="value")
    elif mutation == "wrong_type":
        typed = sorted(name for name, prop in properties.items() if _types(prop, schema))
        name = data.draw(st.sampled_from(typed), label="property")
        arguments[name] = _wrong_value(_types(properties[name], schema))
    elif mutation == "missing_required" and schema.get("required"):
        del arguments[data.draw(st.sampled_from(schema["required"]), label="required")]
    else:  # too deep (and the fallback for schemas without required properties)
        name = data.draw(st.sampled_from(sorted(properties)), label="property")
        arguments[name] = _nested(MAX_ARGUMENT_DEPTH + 1)
        with pytest.raises(InvalidArguments) as too_deep:
            check_size(tool, arguments)
        assert too_deep.value.reason == "arguments_too_deep"
    with pytest.raises(InvalidArguments) as caught:
        check(tool, arguments)
    assert caught.value.reason == "arguments_invalid"
    assert caught.value.path is not None


@pytest.mark.xfail(strict=True, reason="jsonschema-rs 'email' format refuses upper-case A-labels (XN--)")
def test_known_gap_upper_case_idn_email() -> None:
    # Domain names are case-insensitive (RFC 4343) and so is the A-label prefix (RFC 5890 §2.3.2.1): this is
    # a valid address the gateway refuses today (fail closed: a false positive, not a bypass).
    check("demo_update_customer_email", {"customer_id": "C001", "email": "a@b.XN--P1AI"})
