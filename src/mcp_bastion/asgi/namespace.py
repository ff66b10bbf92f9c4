"""Names in the aggregate endpoint (``asgi.aggregate``): ``<server>.<name>`` for tools and prompts, resource
URIs routed by what the members' lists taught, capabilities merged.

Upstream names match ``[a-z0-9][a-z0-9_-]*`` (settings), so they never contain ``.``: the first ``.`` of a
public name splits it unambiguously, whatever the member's own name holds (``docs.v2.search`` is ``docs``'s
``v2.search``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from mcp_bastion.errors import InvalidArguments, MalformedRequest
from mcp_bastion.jsonrpc.message import JSONObject, JSONValue

SEPARATOR: Final = "."
CAPABILITIES: Final = ("tools", "prompts", "resources", "completions")
"""Member capabilities the aggregate offers when a member does (without their sub-options)."""
MAX_ROUTES: Final = 50_000
"""Resource URIs (and template prefixes) remembered for routing."""


def qualify(server: str, name: str) -> str:
    return f"{server}{SEPARATOR}{name}"


def split(name: JSONValue, servers: Iterable[str]) -> tuple[str, str]:
    """``<server>.<name>`` -> (server, name); invalid params when the prefix names no member."""
    if not isinstance(name, str) or not name:
        raise MalformedRequest("a name is required", reason="name_missing")
    server, dot, rest = name.partition(SEPARATOR)
    if not dot or not rest or server not in servers:
        raise InvalidArguments(f"{name[:100]!r} names no server of the aggregate", reason="server_unknown")
    return server, rest


class ResourceRoutes:
    """Which member serves a resource URI, as learnt from the members' lists (shared by all callers:
    routing grants nothing; the member's gate decides)."""

    def __init__(self) -> None:
        self._exact: dict[str, set[str]] = {}
        self._prefixes: dict[str, set[str]] = {}

    def learn(self, server: str, uris: Iterable[str] = (), templates: Iterable[str] = ()) -> None:
        for uri in uris:
            if uri in self._exact or len(self._exact) < MAX_ROUTES:
                self._exact.setdefault(uri, set()).add(server)
        for template in templates:
            prefix = template.split("{", 1)[0]
            if ":" in prefix and (prefix in self._prefixes or len(self._prefixes) < MAX_ROUTES):
                self._prefixes.setdefault(prefix, set()).add(server)

    def claimants(self, uri: str) -> set[str]:
        """The members that serve ``uri``: those listing it, else those whose longest template prefix fits."""
        exact = self._exact.get(uri)
        if exact:
            return set(exact)
        fitting = [prefix for prefix in self._prefixes if uri.startswith(prefix)]
        if not fitting:
            return set()
        longest = max(len(prefix) for prefix in fitting)
        return set().union(*(self._prefixes[p] for p in fitting if len(p) == longest))


def merge_capabilities(members: Iterable[Mapping[str, JSONValue]]) -> JSONObject:
    merged: JSONObject = {}
    for capabilities in members:
        for key in CAPABILITIES:
            if key in capabilities:
                merged[key] = {}
    return merged
