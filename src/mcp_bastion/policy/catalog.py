"""What the policy knows about each upstream's tools: annotations and the scopes a call needs.

Tool annotations (``readOnlyHint``, ``destructiveHint``, ...) are the server's own claims. They only give
defaults: an operator's ``[upstreams.<name>.tools.<tool>]`` settings override them, and the definitions
are learnt from the server's ``tools/list`` answers (a tool the gateway has never seen listed is unknown,
and an unknown tool is never allowed).

Scopes a tool call needs, when the settings do not name them: nothing when the upstream offers no scopes
at all; else ``<prefix>.read`` for a read-only tool, ``<prefix>.write`` for any other, plus
``<prefix>.delete`` for a destructive one (MCP's default for a tool that does not say: destructive).
The prefix is ``scope_prefix`` when set, else the one prefix every offered scope shares, else the
upstream's name.
Resources and prompts need ``<prefix>.read``. A derived scope the upstream does not offer cannot be in any
token of ours, so such a tool is effectively closed until the settings say otherwise.

Invariants:
- a definition learnt from the server never overrides a setting;
- the catalog holds at most ``MAX_TOOLS`` tools per upstream (a server listing more is cut, logged).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, final

from mcp_bastion.jsonrpc.message import JSONValue
from mcp_bastion.policy.entities import ToolFacts
from mcp_bastion.settings import ToolSettings, UpstreamSettings

logger = logging.getLogger(__name__)

MAX_TOOLS: Final = 4096


def default_prefix(server: str, offered: frozenset[str]) -> str:
    """The prefix of derived scopes: the one prefix every offered scope shares (``customers`` for
    ``customers.read`` + ``customers.write``), else the upstream's name."""
    prefixes = {scope.partition(".")[0] for scope in offered if "." in scope}
    if len(prefixes) == 1 and all("." in scope for scope in offered):
        return prefixes.pop()
    return server


@dataclass(frozen=True, slots=True)
class ServerScopes:
    """How one upstream's items map to scopes."""

    offered: frozenset[str]
    prefix: str
    overrides: Mapping[str, ToolSettings] = field(default_factory=dict)

    def read_scopes(self) -> frozenset[str]:
        return frozenset({f"{self.prefix}.read"}) if self.offered else frozenset()


@final
class ToolCatalog:
    """Tool facts per upstream, learnt from ``tools/list`` answers, overridden by settings."""

    def __init__(self, servers: Mapping[str, ServerScopes]) -> None:
        self._servers = dict(servers)
        self._tools: dict[str, dict[str, ToolFacts]] = {name: {} for name in servers}

    @classmethod
    def from_settings(cls, upstreams: Mapping[str, UpstreamSettings]) -> ToolCatalog:
        servers = {}
        for name, upstream in upstreams.items():
            offered = frozenset(upstream.scopes)
            prefix = upstream.scope_prefix or default_prefix(name, offered)
            servers[name] = ServerScopes(offered, prefix, dict(upstream.tools))
        return cls(servers)

    @property
    def servers(self) -> frozenset[str]:
        return frozenset(self._servers)

    def scopes(self, server: str) -> ServerScopes:
        return self._servers[server]

    def get(self, server: str, name: str) -> ToolFacts | None:
        return self._tools[server].get(name)

    def forget(self, server: str) -> None:
        """Drop what was learnt about ``server``'s tools (it announced a change)."""
        self._tools[server] = {}

    def learn(self, server: str, tool: Mapping[str, JSONValue]) -> ToolFacts | None:
        """Record one tool definition from a ``tools/list`` result; None when it is not a usable one."""
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            return None
        known = self._tools[server]
        if name not in known and len(known) >= MAX_TOOLS:
            logger.warning("upstream %s lists more than %d tools; %r is left unknown", server, MAX_TOOLS, name)
            return None
        facts = self.facts(server, name, tool.get("annotations"))
        offered = self._servers[server].offered
        if offered and not facts.scopes <= offered and known.get(name) != facts:
            logger.warning(
                "tool %r of %s needs scopes %s that the upstream does not offer: no token can call it "
                "(add them to upstreams.%s.scopes, or set upstreams.%s.tools.%s.scopes)",
                name,
                server,
                sorted(facts.scopes - offered),
                server,
                server,
                name,
            )
        known[name] = facts
        return facts

    def facts(self, server: str, name: str, annotations: JSONValue | None) -> ToolFacts:
        """The facts of a tool from its declared annotations and the settings."""
        scopes = self._servers[server]
        declared = annotations if isinstance(annotations, dict) else {}
        override = scopes.overrides.get(name, ToolSettings())
        read_only = _flag(override.read_only, declared.get("readOnlyHint"), default=False)
        destructive = _flag(override.destructive, declared.get("destructiveHint"), default=True)
        idempotent = _flag(override.idempotent, declared.get("idempotentHint"), default=False)
        open_world = _flag(override.open_world, declared.get("openWorldHint"), default=True)
        if override.scopes is not None:
            needed = frozenset(override.scopes)
        elif not scopes.offered:
            needed = frozenset()
        elif read_only:
            needed = frozenset({f"{scopes.prefix}.read"})
        else:
            needed = frozenset({f"{scopes.prefix}.write"} | ({f"{scopes.prefix}.delete"} if destructive else set()))
        return ToolFacts(
            server=server,
            name=name,
            scopes=needed,
            # MCP: destructiveHint and idempotentHint are meaningful only when readOnlyHint is false.
            read_only=read_only,
            destructive=destructive and not read_only,
            idempotent=idempotent,
            open_world=open_world,
        )


def _flag(setting: bool | None, declared: JSONValue | None, *, default: bool) -> bool:
    if setting is not None:
        return setting
    return declared if isinstance(declared, bool) else default
