"""Policy test tables (``mcp-bastion policy test FILE``), the way Cedar and OPA policies are tested.

A TOML file of ``[[case]]`` tables, each one question and its expected answer. Cases are decided by the
same ``Authorizer`` the gateway uses (same catalog rules, same scope check), so a table that passes here
describes what the running gateway does::

    [[case]]
    name = "an analyst reads a customer"        # optional
    user = "alice"                              # the token's subject (and preferred_username)
    roles = ["analyst"]
    scopes = ["customers.read"]                 # the token's scopes
    client = "claude"                           # optional OAuth client id
    address = "10.1.2.3"                        # optional caller address (default 127.0.0.1)
    server = "customers"
    action = "tools/call"                       # or resources/read, prompts/get, tools/list, ..., grant_scope
    tool = "get_customer"                       # tools/call: the tool ...
    annotations = { readOnlyHint = true }       # ... as its server lists it (absent: never listed)
    arguments = { customer_id = "C001" }
    expect = "allow"                            # allow | deny | insufficient_scope | invalid
    listed = true                               # optional (tools/call): shown in tools/list?

``uri`` names the resource for ``resources/read``, ``prompt`` the prompt for ``prompts/get``, ``scope`` the
scope for ``grant_scope``. Unknown keys are refused (a typo must not make a case test nothing).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from mcp_bastion.errors import ConfigError, InsufficientScope, InvalidArguments, MalformedRequest, PolicyDenied
from mcp_bastion.exchange import Principal
from mcp_bastion.jsonrpc.message import JSONValue, classify
from mcp_bastion.policy import entities
from mcp_bastion.policy.authorizer import Authorizer, UnknownTool
from mcp_bastion.policy.engine import PolicyEngine

Outcome = Literal["allow", "deny", "insufficient_scope", "invalid"]
OUTCOMES: Final = ("allow", "deny", "insufficient_scope", "invalid")
_KEYS: Final = frozenset(
    {
        "name",
        "user",
        "roles",
        "scopes",
        "client",
        "address",
        "server",
        "action",
        "tool",
        "annotations",
        "arguments",
        "uri",
        "prompt",
        "scope",
        "expect",
        "listed",
    }
)
ISSUER: Final = "policy-test"


@dataclass(frozen=True, slots=True)
class CaseResult:
    name: str
    expected: str
    got: str
    policies: tuple[str, ...]
    listed_expected: bool | None = None
    listed_got: bool | None = None

    @property
    def passed(self) -> bool:
        return self.expected == self.got and self.listed_expected in (None, self.listed_got)


def load_cases(path: Path) -> list[dict[str, object]]:
    """The ``[[case]]`` tables of ``path``; ``ConfigError`` for anything malformed."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    cases = document.get("case")
    if set(document) - {"case"} or not isinstance(cases, list) or not cases:
        raise ConfigError(f"{path}: expected one or more [[case]] tables and nothing else")
    for index, case in enumerate(cases, 1):
        if not isinstance(case, dict):
            raise ConfigError(f"{path}: case {index}: expected a table")
        unknown = set(case) - _KEYS
        if unknown:
            raise ConfigError(f"{path}: case {index}: unknown keys {sorted(unknown)}")
        if case.get("expect") not in OUTCOMES:
            raise ConfigError(f"{path}: case {index}: expect must be one of {list(OUTCOMES)}")
        if "action" not in case or "user" not in case:
            raise ConfigError(f"{path}: case {index}: needs user and action")
        # A value of the wrong shape would be ignored below, making the case test something else.
        for key, kind, shape in (
            ("arguments", dict, "a table"),
            ("annotations", dict, "a table"),
            ("listed", bool, "true or false"),
        ):
            if key in case and not isinstance(case[key], kind):
                raise ConfigError(f"{path}: case {index}: {key} must be {shape}")
    return [dict(case) for case in cases]


def run_cases(cases: Sequence[Mapping[str, object]], authorizer: Authorizer) -> list[CaseResult]:
    engine = authorizer.engine
    return [_run(index, case, authorizer, engine) for index, case in enumerate(cases, 1)]


def _run(index: int, case: Mapping[str, object], authorizer: Authorizer, engine: PolicyEngine) -> CaseResult:
    name = str(case.get("name") or f"case {index}")
    user = str(case["user"])
    principal = Principal(
        subject=user,
        issuer=ISSUER,
        method="bearer",
        client_id=_optional(case, "client"),
        scopes=frozenset(_strings(case, "scopes")),
        roles=frozenset(_strings(case, "roles")),
        preferred_username=user,
    )
    caller = entities.Caller(principal, str(case.get("address", "127.0.0.1")), tls=True)
    action = str(case["action"])
    server = str(case.get("server", ""))
    expected = str(case["expect"])
    listed_expected = case.get("listed")
    if action == "grant_scope":
        query = entities.grant_query(principal, str(case.get("scope", "")), principal.client_id or "")
        decision = engine.decide(query)
        return CaseResult(name, expected, "allow" if decision.allowed else "deny", decision.policies)
    params: dict[str, JSONValue] = {}
    listed: bool | None = None
    if action == "tools/call":
        tool: dict[str, JSONValue] = {"name": str(case.get("tool", ""))}
        annotations = case.get("annotations")
        # A case with annotations is a tool its server lists (the catalog learns it, as from tools/list);
        # without, a tool the server never listed.
        if isinstance(annotations, dict) and server in authorizer.catalog.servers:
            tool["annotations"] = annotations
            listed = authorizer.visible(engine, caller, server, "tools/list", tool)
        params["name"] = tool["name"]
    elif action in ("resources/read", "resources/subscribe"):
        params["uri"] = str(case.get("uri", ""))
    elif action == "prompts/get":
        params["name"] = str(case.get("prompt", ""))
    arguments = case.get("arguments")
    if isinstance(arguments, dict):
        params["arguments"] = arguments
    message = classify({"jsonrpc": "2.0", "id": index, "method": action, "params": params})
    got: Outcome
    policies: tuple[str, ...] = ()
    try:
        if server not in authorizer.catalog.servers:
            raise ConfigError(f"{name}: unknown server {server!r}")
        verdict = authorizer.check_call(caller, server, message, engine)
        got = "allow"
        policies = verdict.policies if verdict is not None else ()
    except PolicyDenied as denied:
        got, policies = "deny", denied.policies
    except InsufficientScope:
        got = "insufficient_scope"
    except (InvalidArguments, MalformedRequest, UnknownTool):
        got = "invalid"
    return CaseResult(
        name,
        expected,
        got,
        policies,
        listed_expected if isinstance(listed_expected, bool) else None,
        listed,
    )


def _optional(case: Mapping[str, object], key: str) -> str | None:
    value = case.get(key)
    return str(value) if value is not None else None


def _strings(case: Mapping[str, object], key: str) -> list[str]:
    value = case.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{key} must be a list of strings")
    return [str(item) for item in value]
