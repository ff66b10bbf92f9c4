"""One decision function for what a user may do and what a user may see.

``check_call`` decides a message (``tools/call``, ``resources/read`` and (un)subscribe, ``prompts/get``,
``completion/complete``, the list methods) and raises; ``visible`` decides one list item with the same
checks and no arguments. Both read the engine in force once per message or list, so a reload between
two items of one list cannot mix two policies.

A call needs a permitting policy (and no forbidding one) **and** every scope the item needs in the
token. The policy is asked first: a user the policy refuses learns nothing about scopes; a user it allows
but whose token lacks a scope gets ``InsufficientScope`` (403, the scopes to ask for: MCP step-up).

Invariants:
- anything this module cannot classify is refused, never waved through: a ``tools/call`` without a string
  ``name`` or with non-object ``arguments``, a tool the upstream never listed, an argument Cedar cannot
  represent;
- an item is listed only if a call of it without arguments (``arguments`` present and empty, exactly as
  ``check_call`` sees such a call) would pass both checks; policies that look at arguments can refuse more
  at call time, never less (Cedar cannot permit on an argument it was not given).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, final

from mcp_bastion.errors import InsufficientScope, InvalidArguments, MalformedRequest, PolicyDenied
from mcp_bastion.exchange import Principal
from mcp_bastion.jsonrpc.message import JSONValue, Message
from mcp_bastion.oauth.service import User
from mcp_bastion.policy import entities
from mcp_bastion.policy.catalog import ToolCatalog
from mcp_bastion.policy.engine import Decision, PolicyEngine
from mcp_bastion.policy.entities import Caller, Query, ToolFacts
from mcp_bastion.policy.schema import LIST_ACTIONS
from mcp_bastion.policy.store import PolicyStore

LIST_KEYS: Final = {
    "tools/list": "tools",
    "resources/list": "resources",
    "resources/templates/list": "resourceTemplates",
    "prompts/list": "prompts",
}
"""List method -> the result member holding its items."""
RESOURCE_METHODS: Final = frozenset({"resources/read", "resources/subscribe", "resources/unsubscribe"})


class UnknownTool(Exception):
    """``tools/call`` of a tool the catalog does not know yet (the caller may list the tools and retry)."""


@final
class Authorizer:
    def __init__(self, store: PolicyStore, catalog: ToolCatalog, arguments: Mapping[str, str]) -> None:
        self.store = store
        self.catalog = catalog
        self._arguments = dict(arguments)

    @property
    def engine(self) -> PolicyEngine:
        return self.store.engine

    def check_call(self, caller: Caller, server: str, message: Message, engine: PolicyEngine) -> Decision | None:
        """Decide one client request; raise the refusal. None when the method is not decided by policy
        (``initialize``, ``ping``, ...: the method allow-list already admitted it)."""
        method = message.method or ""
        params = message.params
        if method == "tools/call":
            name = params.get("name")
            if not isinstance(name, str) or not name:
                raise MalformedRequest("tools/call needs a string name", reason="tool_name_missing")
            tool = self.catalog.get(server, name)
            if tool is None:
                raise UnknownTool(name)
            return self._enforce(engine, entities.tool_query(caller, tool, self._typed(params)), tool.scopes, caller)
        if method in RESOURCE_METHODS:
            uri = params.get("uri")
            if not isinstance(uri, str) or not uri:
                raise MalformedRequest(f"{method} needs a string uri", reason="resource_uri_missing")
            return self._resource(engine, caller, server, uri)
        if method == "prompts/get":
            name = params.get("name")
            if not isinstance(name, str) or not name:
                raise MalformedRequest("prompts/get needs a string name", reason="prompt_name_missing")
            return self._prompt(engine, caller, server, name, self._typed(params))
        if method == "completion/complete":
            return self._completion(engine, caller, server, params)
        if method in LIST_ACTIONS:
            decision = engine.decide(entities.list_query(caller, server, method))
            if not decision.allowed:
                raise PolicyDenied(_detail(decision, engine), reason=decision.reason, policies=decision.policies)
            return decision
        return None

    def visible(self, engine: PolicyEngine, caller: Caller, server: str, method: str, item: JSONValue) -> bool:
        """Whether one item of a ``method`` list result may be shown (learning tools on the way)."""
        if not isinstance(item, dict):
            return False
        if method == "tools/list":
            tool = self.catalog.learn(server, item)
            return tool is not None and self._passes(engine, entities.tool_query(caller, tool, {}), tool, caller)
        if method in ("resources/list", "resources/templates/list"):
            uri = item.get("uri") if method == "resources/list" else item.get("uriTemplate")
            if not isinstance(uri, str):
                return False
            scopes = self.catalog.scopes(server).read_scopes()
            query = entities.resource_query(caller, server, uri, scopes)
            return engine.decide(query).allowed and scopes <= caller.principal.scopes
        if method == "prompts/list":
            name = item.get("name")
            if not isinstance(name, str):
                return False
            scopes = self.catalog.scopes(server).read_scopes()
            query = entities.prompt_query(caller, server, name, scopes, {})
            return engine.decide(query).allowed and scopes <= caller.principal.scopes
        return False

    # -- internals ------------------------------------------------------------------------------------

    def _passes(self, engine: PolicyEngine, query: Query, tool: ToolFacts, caller: Caller) -> bool:
        return engine.decide(query).allowed and tool.scopes <= caller.principal.scopes

    def _enforce(self, engine: PolicyEngine, query: Query, needed: frozenset[str], caller: Caller) -> Decision:
        decision = engine.decide(query)
        if not decision.allowed:
            raise PolicyDenied(_detail(decision, engine), reason=decision.reason, policies=decision.policies)
        missing = needed - caller.principal.scopes
        if missing:
            raise InsufficientScope(f"token lacks {sorted(missing)}", scopes=needed)
        return decision

    def _resource(self, engine: PolicyEngine, caller: Caller, server: str, uri: str) -> Decision:
        scopes = self.catalog.scopes(server).read_scopes()
        return self._enforce(engine, entities.resource_query(caller, server, uri, scopes), scopes, caller)

    def _prompt(
        self,
        engine: PolicyEngine,
        caller: Caller,
        server: str,
        name: str,
        arguments: Mapping[str, JSONValue] | None,
    ) -> Decision:
        scopes = self.catalog.scopes(server).read_scopes()
        return self._enforce(engine, entities.prompt_query(caller, server, name, scopes, arguments), scopes, caller)

    def _completion(
        self, engine: PolicyEngine, caller: Caller, server: str, params: Mapping[str, JSONValue]
    ) -> Decision:
        # Completing an argument of a prompt or a resource template reveals what that item would return.
        ref = params.get("ref")
        if isinstance(ref, dict):
            if ref.get("type") == "ref/prompt" and isinstance(ref.get("name"), str):
                return self._prompt(engine, caller, server, str(ref["name"]), None)
            if ref.get("type") == "ref/resource" and isinstance(ref.get("uri"), str):
                return self._resource(engine, caller, server, str(ref["uri"]))
        raise MalformedRequest("completion/complete needs a prompt or resource ref", reason="completion_ref_invalid")

    def _typed(self, params: Mapping[str, JSONValue]) -> dict[str, JSONValue]:
        arguments = params.get("arguments", {})
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise InvalidArguments("arguments must be an object", reason="arguments_not_object")
        try:
            return entities.typed_arguments(arguments, self._arguments)
        except entities.InvalidArgument as exc:
            raise InvalidArguments(str(exc), reason="argument_not_representable") from exc


def _detail(decision: Decision, engine: PolicyEngine) -> str:
    parts = [f"policy {engine.version}"]
    if decision.policies:
        parts.append("decided by " + ", ".join(decision.policies))
    if decision.errors:
        parts.append("errors: " + "; ".join(decision.errors))
    return ": ".join(parts) if len(parts) > 1 else parts[0] + ": no policy permits this"


@final
class ScopeGrants:
    """``oauth.server.ScopePolicy`` over the policy in force: the authorization server grants a scope only
    when a policy permits ``grant_scope`` on ``Scope::"<scope>"`` for this user (default deny: a scope no
    policy mentions is granted to nobody)."""

    def __init__(self, store: PolicyStore, issuer: str) -> None:
        self._store = store
        self._issuer = issuer

    def __call__(self, user: User, resource: str, requested: frozenset[str], client_id: str) -> frozenset[str]:
        engine = self._store.engine
        principal = Principal(
            subject=user.id, issuer=self._issuer, method="bearer", roles=user.roles, preferred_username=user.username
        )
        return frozenset(
            scope for scope in requested if engine.decide(entities.grant_query(principal, scope, client_id)).allowed
        )
