"""Which tool arguments are sinks, guessed from a tool definition when nobody configured them
(``integrity.sinks`` decides what an inferred sink checks).

Only top-level properties whose schema holds strings (``type: string``, an array of strings, or a string
branch of ``anyOf``/``oneOf``) are considered, by the words of the name (``filePath``, ``repo_path``,
``imageURL``: split at case changes, ``_`` and ``-``) and the format, first rule that matches:

- ``format: uri`` or ``iri``, or a name ending in ``url``/``urls`` → ``url`` (a name ``uri`` without the
  format is left alone: MCP resource URIs use schemes of their own);
- a name containing the word ``sql``, or ending in ``query`` when the tool's name or description or the
  argument's description mentions SQL → ``sql`` (a search ``query`` in prose is not SQL);
- a name ending in ``command``/``cmd`` → ``shell``; and then the tool's argument list beside it (``args``,
  ``arguments``, ``argv``, ``params``) → ``shell`` too: ``sh`` as the command is harmless, ``-c "id; …"`` in
  its arguments is not;
- a name ending in ``path``, ``file``, ``filename``, ``filepath``, ``pathname``, ``dir``, ``dirname``,
  ``directory``, ``folder`` (or plurals) → ``path``.

Names that carry paths without saying so (``source``, ``destination``, a git ``target``) are not guessed:
configure them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final, Literal

Inferred = Literal["path", "shell", "sql", "url"]

_WORDS: Final = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_PATH_WORDS: Final = frozenset(
    {"path", "paths", "file", "files", "filename", "filenames", "filepath", "filepaths", "pathname", "dir",
     "dirs", "dirname", "directory", "directories", "folder", "folders"}
)  # fmt: skip
_URL_WORDS: Final = frozenset({"url", "urls"})
_URL_FORMATS: Final = frozenset({"uri", "iri"})
_SHELL_WORDS: Final = frozenset({"command", "cmd"})
_ARGV_NAMES: Final = frozenset({"args", "arguments", "argv", "params", "parameters"})
_MENTIONS_SQL: Final = re.compile(r"\bsql\b", re.IGNORECASE)


def _string_schema(schema: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The schema of the strings a property holds: itself, its array items, or a string ``anyOf`` branch."""
    kinds = schema.get("type")
    if kinds == "string" or (isinstance(kinds, list) and "string" in kinds):
        return schema
    items = schema.get("items")
    if kinds == "array" and isinstance(items, dict):
        return _string_schema(items)
    for branch in (*schema.get("anyOf", ()), *schema.get("oneOf", ())):
        found = _string_schema(branch) if isinstance(branch, dict) else None
        if found is not None:
            return found
    return None


def infer(definition: Mapping[str, Any]) -> dict[str, Inferred]:
    """Argument name -> the sink kind the module docstring's rules give it (arguments they do not name: none)."""
    schema = definition.get("inputSchema")
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(properties, dict):
        return {}
    tool_words = {word.lower() for word in _WORDS.findall(str(definition.get("name", "")))}
    found: dict[str, Inferred] = {}
    for name, prop in properties.items():
        strings = _string_schema(prop) if isinstance(prop, dict) else None
        if strings is None:
            continue
        words = [word.lower() for word in _WORDS.findall(name)]
        last, last_two = (words[-1], "".join(words[-2:])) if words else ("", "")
        text = f"{prop.get('description', '')} {definition.get('description', '')}"
        if last in _URL_WORDS or strings.get("format") in _URL_FORMATS:
            found[name] = "url"
        elif "sql" in words or (last == "query" and ("sql" in tool_words or _MENTIONS_SQL.search(text))):
            found[name] = "sql"
        elif last in _SHELL_WORDS:
            found[name] = "shell"
        elif last in _PATH_WORDS or last_two in _PATH_WORDS:
            found[name] = "path"
    if "shell" in found.values():
        for name, prop in properties.items():
            if name.lower() in _ARGV_NAMES and isinstance(prop, dict) and _string_schema(prop) is not None:
                found.setdefault(name, "shell")
    return found
