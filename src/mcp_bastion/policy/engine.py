"""A validated Cedar policy set and its decisions.

Cedar's semantics (https://docs.cedarpolicy.com/auth/authorization.html): default deny, any matching
``forbid`` overrides every ``permit``. On top of that the engine fails closed on anything unusual: a
request that does not match the schema, an evaluation error in any policy, or an exception from the
engine itself is a denial whose ``errors`` say why (for the audit record), never an allow.

Invariants:
- an engine exists only for a policy set that parsed and validated against the schema (``compile``
  raises ``PolicyError`` otherwise): a typo in an attribute name stops startup or is refused on reload;
- decisions are cached per ``Query.key`` for this policy set only (a reload makes a new engine, so a
  cached answer never outlives its policies); the cache is bounded;
- each decision names the policies that decided it: their ``@id`` annotation, else ``<file>#<n>``.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, final

import cedarpy
import orjson

from mcp_bastion.errors import BastionError
from mcp_bastion.policy.entities import Query
from mcp_bastion.policy.schema import attribute_names, schema_text

logger = logging.getLogger(__name__)

_POLICY_ID: Final = re.compile(r"`(policy\d+)`")
"""How Cedar's error messages quote a policy id."""

CACHE_SIZE: Final = 16_384
"""Decisions kept per policy set (each a few hundred bytes); a miss costs one Cedar evaluation (~0.1 ms)."""


class PolicyError(BastionError):
    """A policy set that cannot be used: it does not parse, or does not validate against the schema."""

    reason = "policy_invalid"


@dataclass(frozen=True, slots=True)
class PolicySource:
    """One policy file's text and the name decisions cite it by."""

    name: str
    text: str


@dataclass(frozen=True, slots=True)
class Decision:
    """The engine's answer to one ``Query``."""

    allowed: bool
    policies: tuple[str, ...] = ()
    """The policies that decided: the permits that allowed, or the forbids that denied (empty: no permit)."""
    errors: tuple[str, ...] = ()
    """Why the engine could not decide normally (the request was denied because of them)."""

    @property
    def reason(self) -> str:
        """A stable reason code for the audit record."""
        if self.allowed:
            return "policy_allow"
        if self.errors:
            return "policy_error"
        return "policy_forbid" if self.policies else "policy_no_permit"


@final
class PolicyEngine:
    """Decides ``Query``s with one compiled, validated policy set."""

    def __init__(
        self,
        policies: cedarpy.PolicySet,
        schema: cedarpy.Schema,
        labels: Mapping[str, str],
        *,
        version: str,
        count: int,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        self._policies = policies
        self._schema = schema
        self._labels = dict(labels)
        self.version: Final = version
        """A digest of the policy texts (audit records name the version that decided)."""
        self.count: Final = count
        self._cache: OrderedDict[bytes, Decision] = OrderedDict()
        self._cache_size = cache_size

    def decide(self, query: Query) -> Decision:
        cached = self._cache.get(query.key) if query.key else None
        if cached is not None:
            self._cache.move_to_end(query.key)
            return cached
        decision = self._evaluate(query)
        if query.key:
            self._cache[query.key] = decision
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return decision

    def _evaluate(self, query: Query) -> Decision:
        try:
            result = cedarpy.is_authorized(query.request, self._policies, query.entities, self._schema)
        except Exception as exc:  # the engine itself failed: a denial that says so (fail closed)
            logger.exception("policy engine failed")
            return Decision(False, errors=(f"engine: {type(exc).__name__}",))
        diagnostics = result.diagnostics
        reasons = tuple(self._labels.get(policy, policy) for policy in diagnostics.reasons)
        errors = tuple(self._relabel(str(error))[:300] for error in diagnostics.errors)
        if errors:
            # The reasons are the forbids that denied, or, when Cedar would have allowed, the permits that
            # matched: those did not decide this denial, so they are not named as if they had.
            return Decision(False, reasons if result.decision == cedarpy.Decision.Deny else (), errors)
        if result.decision == cedarpy.Decision.Allow:
            return Decision(True, reasons)
        if result.decision == cedarpy.Decision.Deny:
            return Decision(False, reasons)
        # NoDecision: the request itself was refused (it does not match the schema).
        return Decision(False, errors=("request does not match the schema",))

    def _relabel(self, error: str) -> str:
        """An error with the combined set's policy ids (``policy3``) replaced by the labels decisions use."""
        return _POLICY_ID.sub(lambda match: f"`{self._labels.get(match[1], match[1])}`", error)


def compile_policies(sources: Sequence[PolicySource], arguments: Mapping[str, str]) -> PolicyEngine:
    """Parse and validate ``sources`` against the schema; ``PolicyError`` names the file and the problem.

    An empty set compiles (it denies everything); the caller decides whether that is acceptable.
    """
    import hashlib

    schema_source = schema_text(arguments)
    try:
        schema = cedarpy.Schema.from_str(schema_source)
    except ValueError as exc:  # a bug in the shipped schema or in the argument declarations
        raise PolicyError(f"schema: {exc}") from exc
    known = attribute_names(arguments)
    labels: dict[str, str] = {}
    texts: list[str] = []
    for source in sources:
        try:
            parsed = orjson.loads(cedarpy.policies_to_json_str(source.text))
        except (ValueError, orjson.JSONDecodeError) as exc:
            raise PolicyError(f"{source.name}: does not parse: {exc}") from exc
        if not isinstance(parsed, dict):
            raise PolicyError(f"{source.name}: does not parse")
        validation = cedarpy.validate_policies(source.text, schema)
        if not validation.validation_passed:
            problems = "; ".join(str(error) for error in validation.errors) or "not valid"
            raise PolicyError(f"{source.name}: {problems}")
        static = parsed.get("staticPolicies", {})
        templates = parsed.get("templates", {})
        if templates:
            raise PolicyError(f"{source.name}: policy templates are not supported")
        offset = len(labels)
        for index, (policy_id, policy) in enumerate(_ordered(static)):
            annotations = policy.get("annotations", {}) if isinstance(policy, dict) else {}
            label = annotations.get("id") if isinstance(annotations, dict) else None
            labels[f"policy{offset + index}"] = str(label) if label else f"{source.name}#{policy_id}"
            unknown = sorted(_has_tests(policy) - known)
            if unknown:
                raise PolicyError(
                    f"{source.name}: {labels[f'policy{offset + index}']}: `has` tests an attribute the schema does "
                    f"not declare ({', '.join(unknown)}): always false, a typo? (declare arguments in policy.arguments)"
                )
        texts.append(source.text)
    combined = "\n".join(texts)
    try:
        policy_set = cedarpy.PolicySet.from_str(combined)
    except ValueError as exc:
        raise PolicyError(f"policy set: {exc}") from exc
    version = hashlib.sha256(combined.encode()).hexdigest()[:12]
    return PolicyEngine(policy_set, schema, labels, version=version, count=len(labels))


def _ordered(static: object) -> list[tuple[str, object]]:
    """Policies of one file in source order (``policy0``, ``policy1``, ...: numeric, not lexical)."""
    if not isinstance(static, dict):
        return []
    return sorted(static.items(), key=lambda item: int(item[0].removeprefix("policy") or 0))


def _has_tests(node: object) -> set[str]:
    """The attributes a policy (Cedar's JSON form) tests with ``has`` on a variable or its attributes."""
    found: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            has = item.get("has")
            if isinstance(has, dict) and isinstance(has.get("attr"), str) and _rooted_in_variable(has.get("left")):
                found.add(has["attr"])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _rooted_in_variable(node: object) -> bool:
    """``principal``, ``context.arguments``, ...: not a record or set literal written in the policy."""
    while isinstance(node, dict):
        if "Var" in node:
            return True
        step = node.get(".")
        node = step.get("left") if isinstance(step, dict) else None
    return False
