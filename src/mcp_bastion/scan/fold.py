"""Fold text to the form the injection detector reads: NFKC, invisibles removed, look-alikes mapped, lower case.

Invariants:
- ``fold`` is idempotent and total (any ``str`` in, a ``str`` out, never raises);
- characters that render as nothing (zero-width, bidi controls, variation selectors, Unicode tags, soft
  hyphen, BOM, ...) are removed, so ``ig\u200bnore`` and ``ignore`` fold to the same text;
- Unicode tag characters (U+E0020–U+E007E) mirror ASCII and are used to smuggle text that a person never
  sees: ``tag_payload`` decodes them so the hidden text itself can be scanned;
- Cyrillic/Greek letters that look like Latin ones are mapped to Latin (NFKC does not do this), so a
  homoglyph spelling folds to the plain word;
- JSON string escapes (``\\n``, ``\\t``, ``\\"``) read as blanks, so JSON-encoded results tokenise like text;
- ASCII-only input (the common case) takes a fast path: ``str.lower`` and the same-length escape blanking,
  so offsets are unchanged. For other input, offsets into the folded text do not map back to the original.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["INVISIBLE", "fold", "tag_payload"]

INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f"
    "\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8\U0001d173-\U0001d17a\U000e0000-\U000e0fff]"
)
"""Characters that render as nothing or reorder text: removed before reading, counted as a signal."""

_ESCAPE = re.compile(r"\\[nrt\"]")
_TAGS = re.compile("[\U000e0020-\U000e007e]+")

# Letters from other scripts that render like Latin ones; NFKC leaves them alone. The list is the
# lower-case and upper-case homoglyphs that attackers use in practice (Unicode confusables, Latin targets).
_CONFUSABLES = str.maketrans(
    {
        "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "і": "i", "ј": "j", "ѕ": "s",
        "ԁ": "d", "ɡ": "g", "һ": "h", "ӏ": "l", "ԛ": "q", "ԝ": "w", "ո": "n", "ս": "u", "ν": "v", "ο": "o",
        "α": "a", "ε": "e", "ι": "i", "κ": "k", "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "А": "a", "В": "b",
        "Е": "e", "К": "k", "М": "m", "Н": "h", "О": "o", "Р": "p", "С": "c", "Т": "t", "Х": "x", "І": "i",
        "Ј": "j", "Ѕ": "s", "Α": "a", "Β": "b", "Ε": "e", "Ζ": "z", "Η": "h", "Ι": "i", "Κ": "k", "Μ": "m",
        "Ν": "n", "Ο": "o", "Ρ": "p", "Τ": "t", "Υ": "y", "Χ": "x", "ı": "i",
    }
)  # fmt: skip


def fold(text: str) -> str:
    """Return ``text`` normalised for matching (see the module invariants)."""
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
        text = INVISIBLE.sub("", text).translate(_CONFUSABLES)
    text = text.lower()
    if "\\" in text:
        # JSON-encoded results escape line breaks; read ``\nIgnore`` as a break, not as the word "nignore".
        text = _ESCAPE.sub("  ", text)
    return text


def tag_payload(text: str) -> str:
    """Decode the ASCII text hidden in Unicode tag characters (empty when there is none)."""
    if text.isascii():
        return ""
    return " ".join("".join(chr(ord(c) - 0xE0000) for c in run) for run in _TAGS.findall(text))
