"""Strict argument validation: every ``tools/call`` against the tool's *pinned* ``inputSchema``.

JSON Schema 2020-12 and draft-07 (auto-detected) with ``format`` checked, by ``jsonschema-rs`` (~0.2 µs per
check once compiled; validators are compiled once per pinned definition). Stricter than the schema as
written: an object schema that lists ``properties`` and says nothing about ``additionalProperties`` is
closed (``additionalProperties: false``) — an argument the tool never declared is more likely an injection
than a feature. A schema that explicitly allows extra properties keeps them (logged once per tool).

Before the schema, the arguments' size (serialised) and nesting depth are held to limits of their own
(``integrity.max_argument_bytes`` / ``max_argument_depth``), tighter than the whole message's: a schema
that forgets ``maxLength`` or recursion bounds must not make the upstream parse a megabyte of nesting.

Invariants:
- remote ``$ref``s are never fetched (``offline``): a schema from a server cannot make the gateway send
  requests (SSRF through a schema);
- a schema that does not compile refuses every call of its tool (fail closed), it is not skipped;
- a refusal names the JSON path of the first violation, never echoes the value.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping
from typing import Any, Final, final

import jsonschema_rs
import orjson

from mcp_bastion.errors import InvalidArguments, MalformedRequest
from mcp_bastion.jsonrpc.message import JSONValue, check_depth

logger = logging.getLogger(__name__)

_COMPOSED: Final = ("allOf", "anyOf", "oneOf", "$ref", "patternProperties", "unevaluatedProperties", "if")
MAX_CACHE: Final = 4096
MAX_ARGUMENT_BYTES: Final = 524_288
MAX_ARGUMENT_DEPTH: Final = 16


def check_size(
    tool: str,
    arguments: Mapping[str, JSONValue],
    *,
    max_bytes: int = MAX_ARGUMENT_BYTES,
    max_depth: int = MAX_ARGUMENT_DEPTH,
) -> None:
    """Raise ``InvalidArguments`` (``arguments_too_large`` / ``arguments_too_deep``) over either limit."""
    raw = orjson.dumps(dict(arguments))
    if len(raw) > max_bytes:
        raise InvalidArguments(
            f"{tool}: arguments of {len(raw)} bytes, over {max_bytes}", reason="arguments_too_large", path="/"
        )
    # Every container opens with [ or {: fewer brackets than the limit cannot nest that deep (cheap, in C).
    if raw.count(b"[") + raw.count(b"{") > max_depth:
        try:
            check_depth(dict(arguments), max_depth)
        except MalformedRequest:
            raise InvalidArguments(
                f"{tool}: arguments nest deeper than {max_depth}", reason="arguments_too_deep", path="/"
            ) from None


def closed(schema: Any) -> Any:
    """A copy of ``schema`` with every plain object schema closed to undeclared properties."""
    result = copy.deepcopy(schema)
    _close(result)
    return result


def _close(node: Any) -> None:
    if isinstance(node, list):
        for item in node:
            _close(item)
        return
    if not isinstance(node, dict):
        return
    properties = node.get("properties")
    if isinstance(properties, dict) and "additionalProperties" not in node and not any(k in node for k in _COMPOSED):
        node["additionalProperties"] = False
    for key in ("properties", "$defs", "definitions"):
        children = node.get(key)
        if isinstance(children, dict):
            for child in children.values():
                _close(child)
    for key in ("items", "prefixItems", "additionalProperties", "allOf", "anyOf", "oneOf"):
        child = node.get(key)
        if isinstance(child, dict | list):
            _close(child)


def compile_schema(schema: JSONValue) -> Any:
    """A ``jsonschema-rs`` validator (formats checked, remote ``$ref``s never fetched), or the ``ValueError``
    saying why ``schema`` cannot be used (cached like a validator: an unusable schema refuses, every time)."""
    if not isinstance(schema, dict):
        return ValueError("the schema is not an object")
    try:
        return jsonschema_rs.validator_for(schema, validate_formats=True, offline=True)
    except (jsonschema_rs.ValidationError, ValueError) as exc:
        return ValueError(str(exc)[:200])


@final
class SchemaCache:
    """Compiled validators keyed by pinned definition digest (and which schema of it): each schema is
    compiled once, not per call. Bounded: cleared when full, then refilled by the calls that follow."""

    def __init__(self) -> None:
        self._validators: dict[str, Any] = {}

    def get(self, key: str, build: Callable[[], Any]) -> Any:
        """The validator (or ``ValueError``) cached under ``key``, built by ``build()`` on first use."""
        validator = self._validators.get(key)
        if validator is None:
            validator = build()
            if len(self._validators) >= MAX_CACHE:
                self._validators.clear()
            self._validators[key] = validator
        return validator


@final
class ArgumentChecker:
    """Compiled validators per pinned definition digest."""

    def __init__(self) -> None:
        self._validators = SchemaCache()

    def check(self, tool: str, digest: str, schema: JSONValue, arguments: Mapping[str, JSONValue]) -> None:
        """Raise ``InvalidArguments`` (reason ``arguments_invalid`` or ``tool_schema_unusable``) unless valid."""
        validator = self._validators.get(digest, lambda: self._compile(tool, schema))
        if isinstance(validator, Exception):
            raise InvalidArguments(
                f"{tool}: its inputSchema cannot be used: {validator}", reason="tool_schema_unusable"
            )
        for error in validator.iter_errors(dict(arguments)):
            path = "/" + "/".join(str(part) for part in error.instance_path)
            where = "/".join(str(part) for part in error.schema_path)
            raise InvalidArguments(
                f"{tool}: arguments at {path} violate {where}", reason="arguments_invalid", path=path
            )

    def _compile(self, tool: str, schema: JSONValue) -> Any:
        if not isinstance(schema, dict):
            return ValueError("inputSchema is not an object")
        if schema.get("additionalProperties") not in (None, False):
            logger.info("tool %s accepts arguments it does not declare (its schema allows additionalProperties)", tool)
        return compile_schema(closed(schema))
