"""Detect instructions aimed at an AI model in tool descriptions (poisoning) and in tool results (injection).

Two layers, both offline and deterministic:
- structural rules (``scan.injection_rules``): hidden characters, authority markup, concealment from the
  user, secrets or the conversation next to a verb that moves data, exfiltration shapes;
- a logistic-regression classifier over word uni- and bigrams of the folded text (``scan.fold``), trained
  at build time by ``scripts/train-detector`` and shipped as ``injection-model.json``. Text is scored in
  overlapping windows of ``window`` tokens and the highest window wins, so one injected paragraph inside a
  long benign result is not averaged away.

Invariants:
- ``InjectionDetector.load()`` is the only constructor callers need; the object is immutable and safe to
  share between tasks;
- the verdict is ``findings(text, kind=...)`` being non-empty: a strong rule hit, or the combined
  log-odds (classifier window maximum + weaker rule weights) reaching the threshold stored for that kind;
- ``score`` is the same evidence as a number in [0, 1]; 1.0 means a strong rule fired;
- a ``Finding`` names a category, a fixed reason and a span, and never carries the scanned text;
- spans index the folded text, which equals the original for ASCII input (see ``scan.fold``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from itertools import accumulate, pairwise, repeat
from typing import Final

import orjson

from mcp_bastion.scan.fold import fold, tag_payload
from mcp_bastion.scan.injection_rules import STRONG, Category, Kind, RuleHit, folded_hits, raw_hits

__all__ = [
    "MODEL_RESOURCE",
    "Category",
    "Finding",
    "InjectionDetector",
    "Kind",
    "described",
    "tokens",
    "window_starts",
]

MODEL_RESOURCE: Final = "injection-model.json"
"""The shipped weights, a package-data file next to this module."""

# Words of two letters or more: single letters carry no meaning and spaced-out text ("h e l l o") would
# otherwise be read as a bag of one-letter features.
_TOKEN = re.compile(r"[^\W\d_]{2,}")
_ASCII_TOKEN = re.compile(r"[a-z]{2,}")  # the same tokens on folded ASCII text (lower case), several times faster
_ASCII_LETTERS: Final = bytes(byte if 0x61 <= byte <= 0x7A else 0x20 for byte in range(256))
"""``bytes.translate`` table: a-z stay, every other byte becomes a blank (``[a-z]{2,}`` without the regex engine)."""

_REASONS: Final[Mapping[str, str]] = {
    "unicode_tags": "invisible Unicode tag characters carry hidden text",
    "bidi_control": "bidirectional control characters reorder what is displayed",
    "zero_width": "zero-width characters hide or split words",
    "padding": "long blank padding pushes text out of view",
    "authority_markup": "markup claiming authority (system/important block or chat-template token)",
    "override": "tells the model to ignore or override its instructions",
    "conceal": "tells the model to hide something from the user",
    "address_model": "addresses the AI model directly with new instructions",
    "tool_chaining": "instructs how or when to call tools",
    "coercion": "threatens failure unless an instruction is followed",
    "hidden_parameter": "asks a parameter to carry the conversation or secrets",
    "markdown_exfil": "markdown image or link with a templated query (data exfiltration)",
    "send_to_address": "asks to send data to a URL or address",
    "encode_and_include": "asks to encode data and include it somewhere",
    "secret_file": "asks to read or pass a secret file or the conversation",
    "secret_word": "asks to read or pass credentials",
    "classifier": "reads as instructions to an AI model",
}


def tokens(folded: str) -> list[str]:
    """The classifier's tokens: runs of two or more letters in folded text (digits, punctuation separate)."""
    if folded.isascii():
        # ``_ASCII_TOKEN.findall`` in C byte operations (translate, split): the engine costs ~12 ns a character.
        words = folded.encode("ascii").translate(_ASCII_LETTERS).decode("ascii").split()
        return [word for word in words if len(word) > 1]
    return _TOKEN.findall(folded)


def window_starts(n: int, window: int, stride: int) -> list[int]:
    """First token of each scored window; the last window always ends at the last token."""
    if n <= window:
        return [0]
    starts = list(range(0, n - window + 1, stride))
    if starts[-1] != n - window:
        starts.append(n - window)
    return starts


@dataclass(frozen=True, slots=True)
class Finding:
    """One reason a text was judged to carry instructions for a model."""

    category: Category
    reason: str
    start: int
    end: int
    location: str = ""
    """Where in a definition the text was (``inputSchema.properties.path.description``); empty for plain text."""


@dataclass(frozen=True, slots=True)
class _Verdict:
    folded: str
    logit: float
    strong: bool
    hits: tuple[RuleHit, ...]
    window_logit: float
    window_start: int


class InjectionDetector:
    """Rules plus a windowed linear classifier; build with ``InjectionDetector.load()``."""

    __slots__ = ("_bias", "_bigrams", "_stride", "_thresholds", "_unigrams", "_window")

    def __init__(self, model: Mapping[str, object]) -> None:
        if model.get("format") != 1:
            raise ValueError("unsupported injection model format")
        self._window = _int(model["window"])
        self._stride = _int(model["stride"])
        self._bias = _float(model["bias"])
        thresholds = _mapping(model["thresholds"])
        self._thresholds: dict[str, float] = {
            kind: _logit(_float(thresholds[kind])) for kind in ("description", "result")
        }
        self._unigrams: dict[str, float] = {}
        self._bigrams: dict[tuple[str, str], float] = {}
        for feature, weight in _mapping(model["weights"]).items():
            first, _, second = feature.partition(" ")
            if second:
                self._bigrams[(first, second)] = _float(weight)
            else:
                self._unigrams[first] = _float(weight)

    @classmethod
    def load(cls) -> InjectionDetector:
        """The detector with the weights shipped in the package."""
        raw = resources.files("mcp_bastion.scan").joinpath(MODEL_RESOURCE).read_bytes()
        return cls(_mapping(orjson.loads(raw)))

    def score(self, text: str, *, kind: Kind = "result") -> float:
        """Probability-like score in [0, 1] that ``text`` carries instructions for a model (1.0: a strong rule)."""
        verdict = self._assess(text, kind)
        return 1.0 if verdict.strong else _sigmoid(verdict.logit)

    def threshold(self, kind: Kind) -> float:
        """The ``score`` from which ``flagged`` holds for this kind (calibrated when the model was built)."""
        return _sigmoid(self._thresholds[kind])

    def flagged(self, text: str, *, kind: Kind) -> bool:
        """Whether ``text`` is judged to carry instructions for a model (``findings`` is non-empty)."""
        verdict = self._assess(text, kind)
        return verdict.strong or verdict.logit >= self._thresholds[kind]

    def findings(self, text: str, *, kind: Kind) -> list[Finding]:
        """Why ``text`` is judged to carry instructions for a model; empty when it is not."""
        verdict = self._assess(text, kind)
        if not (verdict.strong or verdict.logit >= self._thresholds[kind]):
            return []
        found = [Finding(hit.category, _REASONS[hit.rule], hit.start, hit.end) for hit in verdict.hits]
        if verdict.window_logit > 0.0:
            start, end = self._window_span(verdict.folded, verdict.window_start)
            found.append(Finding("instructions", _REASONS["classifier"], start, end))
        return found

    def scan_definition(self, definition: Mapping[str, object]) -> list[Finding]:
        """Findings in every ``description`` and ``title`` string of a tool, prompt or resource definition.

        Walks nested objects and arrays (``inputSchema`` properties, prompt arguments), so a poisoned
        parameter description is found as well as a poisoned tool description.
        """
        found: list[Finding] = []
        for location, text in described(definition, ""):
            for finding in self.findings(text, kind="description"):
                found.append(Finding(finding.category, finding.reason, finding.start, finding.end, location))
        return found

    # -- internals ---------------------------------------------------------------------------------------

    def _assess(self, text: str, kind: Kind) -> _Verdict:
        folded = fold(text)
        hidden = tag_payload(text)
        if hidden:
            folded = f"{folded}\n{fold(hidden)}"
        toks = tokens(folded)
        hits = (*raw_hits(text, kind), *folded_hits(folded, frozenset(toks), kind))
        strong = any(hit.weight >= STRONG for hit in hits)
        window_logit, window_start = self._max_window(toks)
        logit = window_logit + sum(hit.weight for hit in hits if hit.weight < STRONG)
        return _Verdict(folded, logit, strong, hits, window_logit, window_start)

    def _max_window(self, toks: Sequence[str]) -> tuple[float, int]:
        n = len(toks)
        if n == 0:
            return self._bias, 0
        # Prefix sums of unigram weights and of bigram weights (a bigram counted at its first token), so
        # each window costs two subtractions; map/accumulate keep the per-token work in C.
        uni = list(accumulate(map(self._unigrams.get, toks, repeat(0.0)), initial=0.0))
        bi = list(accumulate(map(self._bigrams.get, pairwise(toks), repeat(0.0)), initial=0.0))
        window = self._window
        if n <= window:
            return self._bias + uni[n] + bi[n - 1], 0
        starts = window_starts(n, window, self._stride)
        # One comprehension and one max() in C instead of a Python loop with a comparison per window.
        sums = [uni[i + window] - uni[i] + bi[i + window - 1] - bi[i] for i in starts]
        best = max(sums)
        return self._bias + best, starts[sums.index(best)]

    def _window_span(self, folded: str, first_token: int) -> tuple[int, int]:
        spans = [m.span() for m in (_ASCII_TOKEN if folded.isascii() else _TOKEN).finditer(folded)]
        if not spans:
            return 0, 0
        last = min(len(spans), first_token + self._window) - 1
        return spans[first_token][0], spans[last][1]


def described(value: object, path: str = "") -> Iterator[tuple[str, str]]:
    """Every ``description`` and ``title`` string of a definition, at any depth, with where it is."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if key in ("description", "title") and isinstance(item, str):
                yield where, item
            else:
                yield from described(item, where)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from described(item, f"{path}[{index}]")


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _mapping(value: object) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise ValueError("malformed injection model")
    return value


def _float(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("malformed injection model")
    return float(value)


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("malformed injection model")
    return value
