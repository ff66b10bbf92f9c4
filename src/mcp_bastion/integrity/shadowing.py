"""Tool shadowing across servers: names that imitate another server's tool, descriptions that point at one.

A model that sees the tools of several servers at once (the aggregate endpoint ``/mcp``, or a client with
several connections) can be steered by one server into using, or misusing, another's tools. This pure
core looks at the tools of several servers together and returns findings; the caller quarantines (see
``asgi.aggregate``: ``PinStore.flag(..., "shadowing", ...)``, or its own memory without pins).

Rules (each finding names its rule and, where there is one, the other tool as ``<server>.<name>``):

- ``confusable_name``: two servers' tools whose names differ but fold to the same key: NFKC (fullwidth and
  mathematical letters), default-ignorable characters removed, the UTS #39 skeleton (Unicode's
  confusables table, shipped as ``confusables.tsv``: Cyrillic ``е`` -> ``e``, ``1`` -> ``l``, ``0`` ->
  ``O`` ...), then the separators ``_ - .`` and spaces dropped. ``sеnd_email`` (Cyrillic ``е``),
  ``ｓｅｎｄ_email``, ``send_emai1``, ``send-email`` all imitate ``send_email``. **Identical names are not
  findings**: two servers offering ``search`` is normal, and the aggregate keeps them apart
  (``a.search``, ``b.search``); only a name built to *look* like another one is.
- ``mixed_script``: a name mixing letters of several scripts (Latin with Cyrillic, Greek, ...; the CJK
  combinations of Japanese, Korean and Chinese count as one), as UTS #39 mixed-script detection. No
  honest tool name mixes alphabets; a spoof usually does.
- ``invisible_characters``: a name holding characters that render as nothing (zero-width, bidi controls,
  variation selectors, ...).
- ``mentions_other_tool``: a description naming a tool of *another* server (cross-tool shadowing: "when
  the send_email tool is called, also BCC ..."). A server has no honest reason to talk about tools it does
  not serve. Identifier-like names (``send_email``, ``sendEmail``, ``fetch-url``, ``v2tool``; four
  characters or more) count wherever they appear as a word, the prefixed form (``b.send_email``)
  always, and plain words (``search``, ``read``) only when written as code: quoted, backticked or called
  (``search(``), because ordinary prose uses them all the time. Names the describing server serves itself
  never count.

Which tool is the imitator in a confusable pair: the one first seen later (first pinned wins) when the two
were first seen more than ``TIE_SECONDS`` apart; otherwise (both new, e.g. two servers configured
together, or first-seen times unknown) **both** are flagged: the gateway cannot tell the genuine one, so
neither is trusted until an administrator approves one (fail closed; an approval stands).

Not detected (documented limits): near names that are not confusable (``send_emails`` vs ``send_email``,
transpositions: too common between honest servers), imitation of a server's *name*, prompts and resources.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

TIE_SECONDS: Final = 60.0
"""Two tools first seen within this many seconds of each other are "both new": neither is presumed genuine."""
SEPARATORS: Final = frozenset("_-. ")
"""Dropped from folded names: ``send-email``, ``send_email`` and ``send.email`` look alike to a model."""
MIN_DISTINCTIVE: Final = 4
"""Shorter names are matched in descriptions only when written as code."""

Rule = Literal["confusable_name", "mixed_script", "invisible_characters", "mentions_other_tool"]

_IGNORABLE_RANGES: Final = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFFA0, 0xFFA0),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)
_CJK: Final = (
    frozenset({"CJK", "HIRAGANA", "KATAKANA", "KATAKANA-HIRAGANA"}),
    frozenset({"CJK", "HANGUL"}),
    frozenset({"CJK", "BOPOMOFO"}),
)
_WORD: Final = re.compile(r"\w(?:[\w.\-]*\w)?")
_CAMEL: Final = re.compile(r"[a-z][A-Z]")
_QUOTES: Final = frozenset("`'\"")


@dataclass(frozen=True, slots=True)
class ToolRef:
    """One server's tool as the analysis sees it."""

    server: str
    name: str
    description: str = ""
    first_seen: float | None = None
    """When the gateway first saw this definition (its pin), or None when unknown."""

    @property
    def qualified(self) -> str:
        return f"{self.server}.{self.name}"


@dataclass(frozen=True, slots=True)
class Finding:
    server: str
    name: str
    rule: Rule
    other: str | None = None
    """``<server>.<name>`` of the tool imitated or mentioned (None for rules about the name alone)."""

    def __str__(self) -> str:
        return f"{self.rule}: {self.other}" if self.other else self.rule


@functools.cache
def _table() -> Mapping[str, str]:
    """The UTS #39 confusables mapping (source character -> prototype characters), read once."""
    text = importlib.resources.files(__package__).joinpath("confusables.tsv").read_text(encoding="ascii")
    table: dict[str, str] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        source, _, target = line.partition("\t")
        table[chr(int(source, 16))] = "".join(chr(int(cp, 16)) for cp in target.split())
    return table


def is_ignorable(ch: str) -> bool:
    """Whether ``ch`` renders as nothing (format characters, variation selectors, fillers, tags, ...)."""
    if unicodedata.category(ch) == "Cf":
        return True
    code = ord(ch)
    return any(low <= code <= high for low, high in _IGNORABLE_RANGES)


def skeleton(text: str) -> str:
    """UTS #39 §4 skeleton, after NFKC and with ignorable characters removed (so fullwidth and zero-width
    spellings fold too). Two strings with the same skeleton look alike."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch for ch in text if not is_ignorable(ch))
    table = _table()
    mapped = "".join(table.get(ch, ch) for ch in unicodedata.normalize("NFD", text))
    return unicodedata.normalize("NFD", mapped)


def name_key(name: str) -> str:
    """What a name looks like: its skeleton without separators."""
    return "".join(ch for ch in skeleton(name) if ch not in SEPARATORS)


def scripts_of(name: str) -> frozenset[str]:
    """The scripts of the letters in ``name`` (approximated by the first word of each letter's Unicode name;
    digits, punctuation and combining marks belong to no script)."""
    found: set[str] = set()
    for ch in unicodedata.normalize("NFKC", name):
        if unicodedata.category(ch).startswith("L"):
            found.add(unicodedata.name(ch, "UNKNOWN").split(" ", 1)[0])
    return frozenset(found)


def is_mixed_script(name: str) -> bool:
    scripts = scripts_of(name)
    if len(scripts) <= 1:
        return False
    return not any(scripts <= family for family in _CJK)


def has_invisible(name: str) -> bool:
    return any(is_ignorable(ch) for ch in name)


def is_distinctive(name: str) -> bool:
    """An identifier-like name, unlikely to appear in prose by chance."""
    if len(name) < MIN_DISTINCTIVE:
        return False
    return any(ch in SEPARATORS or ch.isdigit() for ch in name) or _CAMEL.search(name) is not None


def find_shadowing(tools: Iterable[ToolRef], *, tie_seconds: float = TIE_SECONDS) -> list[Finding]:
    """Every finding for ``tools`` (the tools of several servers), in a stable order."""
    refs = list(dict.fromkeys(tools))
    findings: dict[tuple[str, str, Rule, str | None], Finding] = {}

    def add(ref: ToolRef, rule: Rule, other: str | None = None) -> None:
        findings.setdefault((ref.server, ref.name, rule, other), Finding(ref.server, ref.name, rule, other))

    for ref in refs:
        if has_invisible(ref.name):
            add(ref, "invisible_characters")
        if is_mixed_script(ref.name):
            add(ref, "mixed_script")
    groups: dict[str, list[ToolRef]] = {}
    for ref in refs:
        groups.setdefault(name_key(ref.name), []).append(ref)
    for group in groups.values():
        for i, one in enumerate(group):
            for two in group[i + 1 :]:
                if one.server == two.server or one.name == two.name:
                    continue
                for imitator, genuine in _imitators(one, two, tie_seconds):
                    add(imitator, "confusable_name", genuine.qualified)
    for ref, other in _mentions(refs):
        add(ref, "mentions_other_tool", other.qualified)
    return sorted(findings.values(), key=lambda f: (f.server, f.name, f.rule, f.other or ""))


def _imitators(one: ToolRef, two: ToolRef, tie_seconds: float) -> list[tuple[ToolRef, ToolRef]]:
    """(imitator, imitated) pairs for a confusable pair: the later one, or both when neither is clearly first."""
    if one.first_seen is not None and two.first_seen is not None:
        if two.first_seen - one.first_seen > tie_seconds:
            return [(two, one)]
        if one.first_seen - two.first_seen > tie_seconds:
            return [(one, two)]
    return [(one, two), (two, one)]


def _mentions(refs: list[ToolRef]) -> Iterable[tuple[ToolRef, ToolRef]]:
    """(describing tool, tool of another server its description names)."""
    served: dict[str, set[str]] = {}
    for ref in refs:
        served.setdefault(ref.server, set()).add(ref.name)
    # folded key -> (tool, how it was written: "qualified" / "distinctive" bare name / "plain" bare word)
    targets: dict[str, list[tuple[ToolRef, str]]] = {}
    for ref in refs:
        bare = "distinctive" if is_distinctive(ref.name) else "plain"
        targets.setdefault(name_key(ref.name).casefold(), []).append((ref, bare))
        targets.setdefault(name_key(ref.qualified).casefold(), []).append((ref, "qualified"))
    for ref in refs:
        if not ref.description:
            continue
        text = "".join(ch for ch in unicodedata.normalize("NFKC", ref.description) if not is_ignorable(ch))
        own = served[ref.server]
        for match in _WORD.finditer(text):
            candidates = targets.get(name_key(match.group()).casefold())
            if not candidates:
                continue
            as_code = _written_as_code(text, match.start(), match.end())
            for other, written in candidates:
                if other.server == ref.server:
                    continue
                if written == "qualified" or (other.name not in own and (written == "distinctive" or as_code)):
                    yield ref, other


def _written_as_code(text: str, start: int, end: int) -> bool:
    before = text[start - 1] if start > 0 else ""
    after = text[end] if end < len(text) else ""
    return (before in _QUOTES and after == before) or after == "("
