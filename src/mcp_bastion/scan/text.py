"""Terminal escapes, control characters and invisible characters: found, counted and stripped.

Text an upstream returns reaches a model (which reads characters a person never sees) and often a
terminal (which executes escape sequences: OSC 8 hyperlinks whose target differs from their text, OSC 52
writes to the clipboard, cursor moves that overwrite what was shown). ``strip_controls`` removes all of
it in one pass:

- escape sequences, 7-bit and 8-bit: CSI (``ESC [``), OSC (``ESC ]``, incl. OSC 8 and OSC 52), DCS, SOS,
  PM and APC strings (up to their terminator, BEL or ST; an unterminated string is removed to its end, as
  a terminal would swallow it), and the short ``ESC x`` forms;
- C0 and C1 control characters and DEL, except ``\\n``, ``\\r`` and ``\\t``;
- every format character (Unicode category Cf: zero-width spaces and joiners, bidi embeddings, overrides
  and isolates, word joiner and invisible operators, BOM, soft hyphen, interlinear annotations, Unicode
  tag characters U+E0000–U+E007F);
- variation selectors that cannot be legitimate: the supplementary ones (U+E0100–U+E01EF) and runs of two
  or more basic ones (U+FE00–U+FE0F; a single one after a base character, e.g. emoji presentation, stays),
  since runs of them encode arbitrary bytes invisibly.

Invariants:
- pure and total: any ``str`` in, never raises; ``strip_controls`` is idempotent;
- text without anything to strip is returned as the *same object* with a count of 0 (callers use
  ``is``/the count to keep the original bytes); ASCII text is checked with ``bytes.translate``, other
  text with one precompiled character class, before the full pattern runs at all;
- the count is the number of removed items: an escape sequence counts once, a character once.

Trade-off, written down: emoji ZWJ sequences (family emoji) fall apart into their parts, and ZWNJ/ZWJ in
Persian or Indic text is dropped (rendering changes, meaning does not). Both carry hidden data too often
to be worth an exception in text bound for a model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final, Literal

__all__ = ["Hidden", "hidden_characters", "strip_controls", "tag_text"]

Hidden = Literal["escape", "control", "bidi", "zero_width", "tag", "variation_selector", "format"]
"""Kinds of hidden content ``hidden_characters`` reports."""

# Category Cf of Unicode 14/15 (what CPython 3.11–3.13 ship), as ranges; tests/scan/test_text.py checks
# this list against the running interpreter's unicodedata so a newer Unicode cannot silently add gaps.
_FORMAT_BMP: Final = (
    "\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064"
    "\u2066-\u206f\ufeff\ufff9-\ufffb"
)
_FORMAT_ASTRAL: Final = (
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f"
)
_FORMAT: Final = _FORMAT_BMP + _FORMAT_ASTRAL
_CONTROL: Final = "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
_SUPPLEMENTARY_VS: Final = "\U000e0100-\U000e01ef"

_ESCAPES: Final = (
    # Control strings: OSC (ESC ]), DCS (ESC P), SOS (ESC X), PM (ESC ^), APC (ESC _); terminated by BEL
    # (OSC), ST (ESC \ or 0x9c), or the end of the text.
    r"\x1b[\]PX^_][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    # Their 8-bit forms (0x9d, 0x90, 0x98, 0x9e, 0x9f) only with a terminator close by: a lone U+009D is
    # more often mojibake (a mis-decoded curly quote) than a terminal string, and goes as a control char.
    # The body stops at the next introducer, so failed attempts never rescan text (linear, not quadratic).
    r"|[\x90\x98\x9d\x9e\x9f][^\x07\x1b\x9c\x90\x98\x9d\x9e\x9f]{0,4096}(?:\x07|\x1b\\|\x9c)"
    # CSI: parameters, intermediates, one final byte (ECMA-48 §5.4).
    r"|(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    # Other escapes: ESC, intermediates, a final byte (ESC c, ESC 7, ESC ( B, ...).
    r"|\x1b[ -/]*[0-~]?"
)
_STRIP: Final = re.compile(f"{_ESCAPES}|[{_CONTROL}{_FORMAT}{_SUPPLEMENTARY_VS}]|[\ufe00-\ufe0f]{{2,}}")
# Anything at all that could start a match of _STRIP: one character class, searched before _STRIP runs.
_CANDIDATE: Final = re.compile(f"[{_CONTROL}{_FORMAT}{_SUPPLEMENTARY_VS}\ufe00-\ufe0f]")
# The same split by plane: a class of BMP ranges is a bitmap for the regex engine, astral ranges are
# compared one by one (5x slower), and only text that holds an astral character needs them.
_BMP_CANDIDATE: Final = re.compile(f"[{_CONTROL}{_FORMAT_BMP}\ufe00-\ufe0f]")
_ASTRAL_CANDIDATE: Final = re.compile(f"[{_FORMAT_ASTRAL}{_SUPPLEMENTARY_VS}]")
_ASCII_CONTROLS: Final = bytes([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])
_LATIN1_CANDIDATES: Final = _ASCII_CONTROLS + bytes([*range(0x80, 0xA0), 0xAD])

_TAGS: Final = re.compile("[\U000e0020-\U000e007e]+")
_KINDS: Final[tuple[tuple[Hidden, re.Pattern[str]], ...]] = (
    ("escape", re.compile(_ESCAPES)),
    ("control", re.compile(f"[{_CONTROL}]")),
    ("bidi", re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")),
    ("zero_width", re.compile("[\u200b-\u200d\u2060\ufeff]")),
    ("tag", re.compile("[\U000e0000-\U000e007f]")),
    ("variation_selector", re.compile(f"[{_SUPPLEMENTARY_VS}]|[\ufe00-\ufe0f]{{2,}}")),
)


def _clean(text: str) -> bool:
    """Whether ``text`` certainly holds nothing to strip (the fast path: bytes operations in C for ASCII
    and Latin-1 text, a bitmap class for the rest)."""
    if text.isascii():
        raw = text.encode("ascii")
        return len(raw.translate(None, _ASCII_CONTROLS)) == len(raw)
    try:
        latin = text.encode("latin-1")
    except UnicodeEncodeError:
        pass
    else:
        return len(latin.translate(None, _LATIN1_CANDIDATES)) == len(latin)
    if _BMP_CANDIDATE.search(text) is not None:
        return False
    astral = len(text.encode("utf-16-le", "surrogatepass")) != 2 * len(text)
    return not astral or _ASTRAL_CANDIDATE.search(text) is None


def strip_controls(text: str) -> tuple[str, int]:
    """``text`` without escape sequences, control and invisible characters, and how many were removed."""
    if _clean(text):
        return text, 0
    cleaned, count = _STRIP.subn("", text)
    if count and _CANDIDATE.search(cleaned) is not None:
        # Removing one item can join two halves into a new one (``\x1b\x1b[[31m``): strip to a fixed point.
        again, more = strip_controls(cleaned)
        return again, count + more
    return (cleaned, count) if count else (text, 0)


def hidden_characters(text: str) -> Mapping[Hidden, int]:
    """How many hidden items of each kind ``text`` holds (empty when it is clean), for findings and audit.

    Escape sequences are counted first and their contents not counted again; format characters not named
    by a more specific kind are reported as ``format``."""
    if _clean(text):
        return {}
    found: dict[Hidden, int] = {}
    rest = text
    for kind, pattern in _KINDS:
        rest, count = pattern.subn("", rest)
        if count:
            found[kind] = count
    _, other = _STRIP.subn("", rest)
    if other:
        found["format"] = other
    return found


def tag_text(text: str) -> str:
    """The ASCII text smuggled in Unicode tag characters (U+E0020–U+E007E), runs joined by a space; empty
    when there is none. Stripping hides it from the model, but it is still evidence: scan it too."""
    if text.isascii():
        return ""
    return " ".join("".join(chr(ord(char) - 0xE0000) for char in run) for run in _TAGS.findall(text))
