"""The Cedar schema every policy is validated against (at startup, on reload, by ``policy validate``).

Principals are ``User``s (the token's subject, or the client certificate's identity), members of their
``Role``s (the token's roles claim, or ``tls.client_auth.roles``); the OAuth client is
``context.client_id``. Resources are an upstream's ``Tool``s, ``Resource``s and
``Prompt``s, each a member of its ``Server``, and the OAuth ``Scope``s the authorization server grants.
Actions are the MCP methods they decide (``tools/call`` ...), the list methods (grouped under ``list``,
deciding whether a server may be listed at all), and ``grant_scope`` (may the authorization server grant
this scope to this user).

The tool arguments are typed by the operator (``policy.arguments`` in the settings): the schema declares
them as optional attributes of ``Arguments``, so a policy that reads one must first test it with ``has``
(Cedar's validator insists), and an argument of another type at run time makes the request invalid, which
denies it. Arguments not declared are never given to Cedar: no policy can read them.

Invariants:
- a policy that names an attribute, entity type or action not declared here fails validation, including
  in a ``has`` test (Cedar's validator types ``context.arguments has regoin`` as always false and lets it
  pass, so a typo would silently disable a forbid rule: ``engine`` refuses a ``has`` of an attribute that
  ``attribute_names`` does not list);
- the schema is the single description of what the gateway puts in entities and contexts: ``entities``
  builds exactly these shapes (a test validates sample requests against it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final, Literal

from mcp_bastion.errors import ConfigError

ArgumentType = Literal["String", "Long", "Bool", "Set<String>", "Set<Long>"]
ARGUMENT_TYPES: Final[frozenset[str]] = frozenset({"String", "Long", "Bool", "Set<String>", "Set<Long>"})
_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
"""Cedar identifiers: argument names used as attributes without quoting."""
_RESERVED: Final = frozenset({"true", "false", "if", "then", "else", "in", "is", "like", "has", "__cedar"})
"""Cedar's reserved identifiers: the schema parser refuses them as attribute names."""

CALL_ACTIONS: Final = {"tools/call": "Tool", "resources/read": "Resource", "prompts/get": "Prompt"}
"""Action -> the entity type it applies to."""
LIST_ACTIONS: Final = ("tools/list", "resources/list", "resources/templates/list", "prompts/list")

BASE_SCHEMA: Final = """
// Who is asking.
entity Role;
entity User in [Role] {     // id: the token's subject (for local users an opaque id)
  username: String, // the token's preferred_username, else the subject
  issuer: String,   // the token's issuer, "mtls" for a client certificate, "none" when unauthenticated
  auth: String,     // "bearer", "mtls" or "none"
};

// What they ask about. Ids: Server::"<server>", Tool::"<server>/<tool>", Resource::"<server>/<uri>",
// Prompt::"<server>/<prompt>", Scope::"<scope>".
entity Server;
entity Tool in [Server] {
  name: String,
  server: String,
  read_only: Bool,     // annotations (MCP defaults when absent: false, true, false, true) or settings
  destructive: Bool,
  idempotent: Bool,
  open_world: Bool,
  scopes: Set<String>, // the OAuth scopes a call needs (besides a permitting policy)
};
entity Resource in [Server] { uri: String, server: String, scopes: Set<String> };
entity Prompt in [Server] { name: String, server: String, scopes: Set<String> };
entity Scope { name: String };

type Network = { address: ipaddr, tls: Bool, mtls: Bool };
type Time = { hour: Long, weekday: Long };  // UTC; weekday 1 = Monday ... 7 = Sunday
type Request = {
  client_id: String,   // "" without an OAuth client
  scopes: Set<String>, // the token's scopes
  network: Network,
  time: Time,
  arguments?: Arguments, // tools/call and prompts/get only
};

action "tools/call" appliesTo { principal: [User], resource: [Tool], context: Request };
action "resources/read" appliesTo { principal: [User], resource: [Resource], context: Request };
action "prompts/get" appliesTo { principal: [User], resource: [Prompt], context: Request };
action list;
action "tools/list", "resources/list", "resources/templates/list", "prompts/list" in [list]
  appliesTo { principal: [User], resource: [Server], context: Request };
action grant_scope appliesTo { principal: [User], resource: [Scope], context: { client_id: String } };
"""


def schema_text(arguments: Mapping[str, str]) -> str:
    """The full schema with the operator's typed arguments (``name -> ArgumentType``)."""
    fields = []
    for name, kind in sorted(arguments.items()):
        if not _NAME.fullmatch(name) or name in _RESERVED:
            raise ConfigError(f"policy.arguments: {name!r} is not a Cedar identifier (letters, digits, _; no keyword)")
        if kind not in ARGUMENT_TYPES:
            raise ConfigError(f"policy.arguments.{name}: type {kind!r}; allowed are {sorted(ARGUMENT_TYPES)}")
        fields.append(f"  {name}?: {kind},")
    body = "\n".join(fields)
    return f"{BASE_SCHEMA}\ntype Arguments = {{\n{body}\n}};\n"


_ATTRIBUTE: Final = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\??\s*:(?!:)")
_COMMENT: Final = re.compile(r"//[^\n]*")


def attribute_names(arguments: Mapping[str, str]) -> frozenset[str]:
    """Every attribute name the schema declares, on any entity or record (a ``has`` of any other is a typo)."""
    declared = frozenset(_ATTRIBUTE.findall(_COMMENT.sub("", BASE_SCHEMA))) - {"principal", "resource", "context"}
    return declared | frozenset(arguments)
