"""MCP facts -> Cedar requests: the entities and context ``schema`` declares, nothing else.

A ``Query`` is one question for the engine (principal, action, resource, context) in Cedar's JSON shapes,
plus the entities it needs; ``Query.key`` identifies it for the decision cache.

Invariants:
- every string from the outside (user names, tool names, URIs, arguments) goes into Cedar as JSON data,
  never into policy text: an id like ``a" || true`` is just an odd id;
- arguments are converted only when ``policy.arguments`` declares them, to the declared type; a value of
  another type is kept as it is (Cedar's request validation then refuses the request: denied), never
  coerced or dropped, so a forbid rule cannot be dodged by sending ``"amount": "5000"`` for a Long;
- JSON numbers that are not 64-bit integers have no Cedar value: such an argument makes the query invalid.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import orjson

from mcp_bastion.exchange import Principal
from mcp_bastion.jsonrpc.message import JSONValue

_MIN_LONG: Final = -(2**63)
_MAX_LONG: Final = 2**63 - 1


class InvalidArgument(ValueError):
    """An argument cannot be represented with its declared Cedar type (the call is refused)."""


@dataclass(frozen=True, slots=True)
class ToolFacts:
    """What the policy knows about one tool (annotations as declared, or overridden by settings)."""

    server: str
    name: str
    scopes: frozenset[str]
    read_only: bool = False
    destructive: bool = True
    idempotent: bool = False
    open_world: bool = True


@dataclass(frozen=True, slots=True)
class Caller:
    """The principal plus the network facts of its request."""

    principal: Principal
    address: str
    """The client's IP address (``0.0.0.0`` when unknown, e.g. a Unix socket: no address rule matches it by
    accident; see ``pipeline.authorize.ip_of``)."""
    tls: bool


@dataclass(frozen=True, slots=True)
class Query:
    """One authorization question in Cedar's JSON shapes."""

    request: dict[str, JSONValue]
    entities: list[dict[str, JSONValue]]
    key: bytes = field(default=b"")
    """Canonical bytes of request + entities: equal keys, equal answers (for one policy set)."""


def user_entity(principal: Principal) -> tuple[dict[str, JSONValue], list[dict[str, JSONValue]]]:
    """The ``User`` uid and the entities of the user and its roles."""
    uid: dict[str, JSONValue] = {"type": "User", "id": principal.subject}
    roles: list[JSONValue] = [{"type": "Role", "id": role} for role in sorted(principal.roles)]
    user: dict[str, JSONValue] = {
        "uid": uid,
        "attrs": {"issuer": principal.issuer, "auth": principal.method, "username": principal.username},
        "parents": roles,
    }
    return uid, [user, *({"uid": role, "attrs": {}, "parents": []} for role in roles)]


def _context(caller: Caller, arguments: Mapping[str, JSONValue] | None, now: float) -> dict[str, JSONValue]:
    moment = time.gmtime(now)
    principal = caller.principal
    context: dict[str, JSONValue] = {
        "client_id": principal.client_id or "",
        "scopes": _strings(principal.scopes),
        "network": {
            "address": {"__extn": {"fn": "ip", "arg": caller.address}},
            "tls": caller.tls,
            "mtls": principal.method == "mtls",
        },
        "time": {"hour": moment.tm_hour, "weekday": moment.tm_wday + 1},
    }
    if arguments is not None:
        context["arguments"] = dict(arguments)
    return context


def _query(
    caller: Caller,
    action: str,
    resource: dict[str, JSONValue],
    entities: list[dict[str, JSONValue]],
    arguments: Mapping[str, JSONValue] | None,
    now: float,
) -> Query:
    uid, people = user_entity(caller.principal)
    request: dict[str, JSONValue] = {
        "principal": uid,
        "action": {"type": "Action", "id": action},
        "resource": resource,
        "context": _context(caller, arguments, now),
    }
    all_entities = [*people, *entities]
    key = orjson.dumps([request, all_entities], option=orjson.OPT_SORT_KEYS)
    return Query(request, all_entities, key)


def _server(name: str) -> dict[str, JSONValue]:
    return {"uid": {"type": "Server", "id": name}, "attrs": {}, "parents": []}


def tool_query(
    caller: Caller, tool: ToolFacts, arguments: Mapping[str, JSONValue] | None, *, now: float | None = None
) -> Query:
    """May ``caller`` call ``tool`` (with ``arguments``; None: with some arguments, for lists)?"""
    uid: dict[str, JSONValue] = {"type": "Tool", "id": f"{tool.server}/{tool.name}"}
    entity: dict[str, JSONValue] = {
        "uid": uid,
        "attrs": {
            "name": tool.name,
            "server": tool.server,
            "read_only": tool.read_only,
            "destructive": tool.destructive,
            "idempotent": tool.idempotent,
            "open_world": tool.open_world,
            "scopes": _strings(tool.scopes),
        },
        "parents": [{"type": "Server", "id": tool.server}],
    }
    return _query(caller, "tools/call", uid, [entity, _server(tool.server)], arguments, _now(now))


def resource_query(caller: Caller, server: str, uri: str, scopes: frozenset[str], *, now: float | None = None) -> Query:
    uid: dict[str, JSONValue] = {"type": "Resource", "id": f"{server}/{uri}"}
    entity: dict[str, JSONValue] = {
        "uid": uid,
        "attrs": {"uri": uri, "server": server, "scopes": _strings(scopes)},
        "parents": [{"type": "Server", "id": server}],
    }
    return _query(caller, "resources/read", uid, [entity, _server(server)], None, _now(now))


def prompt_query(
    caller: Caller,
    server: str,
    name: str,
    scopes: frozenset[str],
    arguments: Mapping[str, JSONValue] | None,
    *,
    now: float | None = None,
) -> Query:
    uid: dict[str, JSONValue] = {"type": "Prompt", "id": f"{server}/{name}"}
    entity: dict[str, JSONValue] = {
        "uid": uid,
        "attrs": {"name": name, "server": server, "scopes": _strings(scopes)},
        "parents": [{"type": "Server", "id": server}],
    }
    return _query(caller, "prompts/get", uid, [entity, _server(server)], arguments, _now(now))


def list_query(caller: Caller, server: str, method: str, *, now: float | None = None) -> Query:
    """May ``caller`` use the list method ``method`` on ``server`` at all?"""
    uid: dict[str, JSONValue] = {"type": "Server", "id": server}
    return _query(caller, method, uid, [_server(server)], None, _now(now))


def grant_query(principal: Principal, scope: str, client_id: str) -> Query:
    """May the authorization server grant ``scope`` to this user (for ``client_id``)?"""
    uid, people = user_entity(principal)
    resource: dict[str, JSONValue] = {"type": "Scope", "id": scope}
    request: dict[str, JSONValue] = {
        "principal": uid,
        "action": {"type": "Action", "id": "grant_scope"},
        "resource": resource,
        "context": {"client_id": client_id},
    }
    entities: list[dict[str, JSONValue]] = [*people, {"uid": resource, "attrs": {"name": scope}, "parents": []}]
    return Query(request, entities, orjson.dumps([request, entities], option=orjson.OPT_SORT_KEYS))


def _strings(values: frozenset[str]) -> list[JSONValue]:
    return list(sorted(values))


def _now(now: float | None) -> float:
    return time.time() if now is None else now


def typed_arguments(arguments: Mapping[str, JSONValue], declared: Mapping[str, str]) -> dict[str, JSONValue]:
    """The declared arguments, checked for Cedar (``InvalidArgument`` when one has no Cedar value)."""
    typed: dict[str, JSONValue] = {}
    for name, kind in declared.items():
        if name not in arguments:
            continue
        value = arguments[name]
        _check_value(name, value, kind)
        typed[name] = value
    return typed


def _check_value(name: str, value: JSONValue, kind: str) -> None:
    # Values of the wrong type pass through unchanged: Cedar's request validation refuses them (denied).
    # Only values Cedar cannot represent at all are refused here, with a clearer reason.
    items = value if isinstance(value, list) and kind.startswith("Set<") else [value]
    for item in items:
        if isinstance(item, float) or (isinstance(item, int) and not isinstance(item, bool)):
            if isinstance(item, float) or not _MIN_LONG <= item <= _MAX_LONG:
                raise InvalidArgument(f"argument {name!r}: {item!r} is not a 64-bit integer")
        elif item is None or isinstance(item, dict):
            raise InvalidArgument(f"argument {name!r}: {type(item).__name__} has no {kind} value")
