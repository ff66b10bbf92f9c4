"""The definition scan: what the pins run on every new or changed tool, prompt, resource and template.

A definition is flagged (and its item quarantined, ``integrity.pins``) when:
- any ``description`` or ``title`` in it — the item's own, its ``inputSchema``'s property descriptions,
  a prompt's argument descriptions — reads as instructions to the model (``scan.injection``: hidden
  characters, authority blocks, concealment, tool chaining, requests for secrets or the conversation,
  exfiltration shapes, and the trained classifier);
- any other string in it (names, enum values, defaults, examples, property names) hides characters a
  person does not see (``scan.text``): a name is for routing and display, never a carrier;
- a parameter is named for something a tool has no business asking the model for: credentials, private
  keys, the conversation or the system prompt (``sidenote``-style hidden parameters are caught by what
  their description asks for). An operator who knows a tool really takes a password approves it once.

Invariants:
- the scan reads the definition only; it never raises for odd shapes (anything that is not a string,
  object or array is skipped);
- findings are short fixed phrases with a location, never the scanned text.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Final

from mcp_bastion.scan.injection import InjectionDetector, described
from mcp_bastion.scan.text import hidden_characters

SENSITIVE_PARAMETER: Final = re.compile(
    r"(?:^|[_\-.])(?:pass(?:word|wd|phrase)|secret|api[_\-]?key|private[_\-]?key|ssh[_\-]?key|id[_\-]?rsa"
    r"|credentials?|cookies?|conversation(?:[_\-]?history)?|chat[_\-]?history|system[_\-]?prompt"
    r"|previous[_\-]?messages?)(?:$|[_\-.])",
    re.IGNORECASE,
)
"""Parameter names asking the model for credentials or the conversation (whole words of the name)."""
_DESCRIBED: Final = frozenset({"description", "title"})


class DefinitionScan:
    """``PinStore``'s inspector: ``scan(kind, definition)`` returns short findings, empty when clean."""

    def __init__(self, detector: InjectionDetector | None = None) -> None:
        self.detector = detector if detector is not None else InjectionDetector.load()

    def __call__(self, kind: str, definition: Mapping[str, object]) -> list[str]:
        found: list[str] = []
        for where, text in described(definition):
            if not any(char.isspace() for char in text.strip()):
                # One word (``run_commandArguments``, a title SDKs generate): a name, not prose for the
                # model; the classifier reads such words as a sentence. Hidden characters still count.
                hidden = hidden_characters(text)
                if hidden:
                    found.append(f"hidden_characters at {where}: {', '.join(sorted(hidden))}")
                continue
            found.extend(
                f"{finding.category} at {where}: {finding.reason}"
                for finding in self.detector.findings(text, kind="description")
            )
        for where, text in _strings(definition, ""):
            hidden = hidden_characters(text)
            if hidden:
                found.append(f"hidden_characters at {where}: {', '.join(sorted(hidden))}")
        for where, name in _parameters(definition):
            if SENSITIVE_PARAMETER.search(name):
                found.append(f"secrets_request at {where}: a parameter named for credentials or the conversation")
        return _unique(found)


def _strings(value: object, path: str) -> Iterator[tuple[str, str]]:
    """Every string of the definition other than descriptions (those get the full scan), and every key."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            yield f"{where} (name)", str(key)
            if key in _DESCRIBED and isinstance(item, str):
                continue
            yield from _strings(item, where)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{path}[{index}]")
    elif isinstance(value, str):
        yield path, value


def _parameters(definition: Mapping[str, object]) -> Iterator[tuple[str, str]]:
    """Tool parameters (``inputSchema`` properties, nested too) and prompt arguments, by name."""
    schema = definition.get("inputSchema")
    stack: list[tuple[str, object]] = [("inputSchema", schema)]
    while stack:
        path, node = stack.pop()
        if not isinstance(node, Mapping):
            continue
        properties = node.get("properties")
        if isinstance(properties, Mapping):
            for name, child in properties.items():
                yield f"{path}.properties.{name}", str(name)
                stack.append((f"{path}.properties.{name}", child))
        items = node.get("items")
        if isinstance(items, Mapping):
            stack.append((f"{path}.items", items))
    arguments = definition.get("arguments")
    if isinstance(arguments, list):
        for index, argument in enumerate(arguments):
            if isinstance(argument, Mapping) and isinstance(argument.get("name"), str):
                yield f"arguments[{index}]", str(argument["name"])


def _unique(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))
