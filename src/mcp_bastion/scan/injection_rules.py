"""Structural rules for instructions aimed at an AI model: hidden text, authority, concealment, secrets, exfiltration.

The rules describe *shapes* that generalise across wordings, not lists of known attack strings: characters a
person cannot see, pseudo-markup claiming authority (``<IMPORTANT>``, chat-template tokens), an instruction
to hide something from the user, a sensitive file or the conversation named next to a verb that moves data,
a URL or address as the destination of a send, a parameter told to carry the conversation.

Invariants:
- every pattern is compiled once at import and runs on text already folded by ``scan.fold`` (lower case,
  invisibles removed), except the hidden-character rules, which must see the raw text;
- a rule hit carries a weight per kind of text. ``STRONG`` hits are decisive on their own; other weights are
  log-odds added to the classifier's, so a weak rule only tips a text the classifier already leans on;
- no pattern has nested unbounded repetition: every gap is a bounded ``{0,n}``, so a hit costs at most
  linear time in the text (no catastrophic backtracking on hostile input);
- a hit reports where it matched and a fixed reason string, never the matched text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

__all__ = ["STRONG", "Category", "Kind", "RuleHit", "folded_hits", "raw_hits"]

Kind = Literal["description", "result"]
Category = Literal["instructions", "exfiltration", "secrets_request", "hidden_characters", "tool_reference"]

STRONG: Final = 12.0
"""A weight that flags a text on its own, whatever the classifier says."""


@dataclass(frozen=True, slots=True)
class RuleHit:
    category: Category
    rule: str
    start: int
    end: int
    weight: float


@dataclass(frozen=True, slots=True)
class _Rule:
    name: str
    category: Category
    pattern: re.Pattern[str]
    description: float
    result: float
    anchors: frozenset[str]
    """Words (classifier tokens) of which at least one must occur for the pattern to be tried at all."""
    needs: tuple[str, ...] = ()
    """Substrings of which at least one must occur as well (empty: no such condition)."""

    def weight(self, kind: Kind) -> float:
        return self.description if kind == "description" else self.result


def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.VERBOSE)


# -- raw-text rules: these must see the characters that folding removes ---------------------------------

_TAGS = re.compile("[\U000e0000-\U000e007f]")
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")
# Zero-width and other blank-rendering characters, without ZWJ/VS16 (emoji sequences) and the soft hyphen
# (web text hyphenation), which are common in benign text.
_ZERO_WIDTH = re.compile("[\u034f\u115f\u1160\u180e\u200b\u200c\u200e\u200f\u2060-\u2064\u3164\ufeff\uffa0]")
_BLANK = "[ \t\u00a0\u3000\u200b-\u200f\u2060]"
_PADDING = re.compile(f"(?:(?:{_BLANK}*\n){{8,}}|{_BLANK}{{80,}})(?=[^\\s\u200b-\u200f\u2060])")


def raw_hits(text: str, kind: Kind) -> list[RuleHit]:
    """Hidden-character hits on the unfolded text."""
    hits: list[RuleHit] = []
    if not text.isascii():
        if (m := _TAGS.search(text)) is not None:
            hits.append(RuleHit("hidden_characters", "unicode_tags", m.start(), m.end(), STRONG))
        if (m := _BIDI.search(text)) is not None:
            hits.append(
                RuleHit(
                    "hidden_characters", "bidi_control", m.start(), m.end(), STRONG if kind == "description" else 2.0
                )
            )
        zero_width = _ZERO_WIDTH.findall(text)
        if len(zero_width) >= 3 and (m := _ZERO_WIDTH.search(text)) is not None:
            hits.append(
                RuleHit("hidden_characters", "zero_width", m.start(), m.end(), 5.0 if kind == "description" else 1.5)
            )
    if kind == "description" and (m := _PADDING.search(text)) is not None:
        hits.append(RuleHit("hidden_characters", "padding", m.start(), m.end(), 4.0))
    return hits


# -- folded-text rules -----------------------------------------------------------------------------------

_NOUN_INSTRUCTIONS = (
    r"(?:instructions?|directives?|rules|guidelines|guardrails|prompts?|constraints|restrictions|programming"
    r"|system\ (?:message|prompt)|context|orders|commands|policies|safeguards)"
)
_QUALIFIER = (
    r"(?:previous|prior|above|earlier|preceding|former|original|initial|existing|all|any|your|system|safety"
    r"|the\ user'?s?)"
)
_AI = r"(?:ai|assistant|model|llm|agent|chatbot|bot|claude|chatgpt|gpt|gemini|copilot)"

_RULES: Final[tuple[_Rule, ...]] = (
    _Rule(
        "authority_markup",
        "instructions",
        _rx(
            r"""<\s{0,3}/?\s{0,3}(?:important|system|sys|instructions?|information|admin(?:istrator)?|critical|urgent
                |secret|hidden|priority|override|developer)\b[^<>\n]{0,40}>
              | <\|\s{0,3}(?:im_start|im_end|system|endoftext|eot_id|start_header_id)\s{0,3}\|>
              | \[/?\s{0,3}(?:inst|system|sys)\s{0,3}\] | <<\s{0,3}/?sys\s{0,3}>>
              | \#{2,}\s{0,3}\(?\s{0,3}(?:system|instructions?|important)\b
              | \#{1,}\s{0,3}[(\[]\s{0,3}(?:system|instructions?|important|assistant|admin)\w{0,20}\s{0,3}[)\]]"""
        ),
        STRONG,
        6.0,
        frozenset(
            str.split(
                "important system sys instruction instructions information admin administrator critical urgent "
                "secret hidden priority override developer im endoftext eot start inst assistant"
            )
        ),
        ("<", "[", "#"),
    ),
    _Rule(
        "override",
        "instructions",
        _rx(
            rf"""\b(?:ignore|ignoring|disregard|forget|override|bypass|abandon|discard|neglect)\b
                 (?:\W{{1,3}}\w+){{0,3}}?\W{{1,3}}{_QUALIFIER}\b(?:\W{{1,3}}\w+){{0,2}}?\W{{1,3}}{_NOUN_INSTRUCTIONS}\b"""
        ),
        STRONG,
        8.0,
        frozenset(["ignore", "ignoring", "disregard", "forget", "override", "bypass", "abandon", "discard", "neglect"]),
    ),
    _Rule(
        "conceal",
        "instructions",
        _rx(
            r"""\b(?:do\ not|don'?t|never|without|must\ not|should\ not|shouldn'?t|avoid|not\ to)\s{1,3}
                  (?:\w+\s{1,3}){0,2}?
                  (?:tell(?:ing)?|inform(?:ing)?|mention(?:ing)?|reveal(?:ing)?|notify(?:ing)?|alert(?:ing)?
                    |disclos(?:e|ing)|let(?:ting)?|explain(?:ing)?|show(?:ing)?|report(?:ing)?|warn(?:ing)?)\b
                  [^.\n]{0,40}?\b(?:user|human|person|operator|them)\b
              | \b(?:without|before)\s{1,3}(?:the\s{1,3})?user(?:'s)?\s{1,3}(?:knowledge|noticing|knowing
                |consent|awareness)
              | \bthe\s{1,3}user\s{1,3}(?:must|should|will|does|need)\s{1,3}not\s{1,3}(?:know|see|notice
                |find\ out|be\ told)
              | \b(?:do\ not|don'?t|never)\s{1,3}(?:explain|mention|say|tell\ (?:them|anyone))\s{1,3}(?:why
                |that\ you|this)
              | \bact\s{1,3}(?:like|as\ if)\s{1,3}(?:if\s{1,3})?(?:you|it|nothing)"""
        ),
        STRONG,
        5.0,
        frozenset(
            str.split(
                "tell telling inform informing mention mentioning reveal revealing notify notifying alert "
                "alerting disclose disclosing let letting explain explaining show showing report reporting warn "
                "warning knowledge noticing knowing consent awareness know see notice told act"
            )
        ),
    ),
    _Rule(
        "address_model",
        "instructions",
        _rx(
            rf"""\b(?:you\ are\ now|from\ now\ on|act\ as|pretend\ (?:to\ be|you|that)|role-?play\ as|new\ instructions?
                |updated\ instructions?|dear\ {_AI}|(?:hey|hi|attention|note\ to(?:\ the)?)\ {_AI}
                  |as\ an?\ (?:ai|language\ model)
                |instead,?\s(?:reply|respond|say|answer|output|return|tell))\b
              | \b(?:the\ )?{_AI}\s{{1,3}}(?:must|should|shall|needs\ to|is\ required\ to|will\ now)\b"""
        ),
        2.5,
        2.5,
        frozenset(
            str.split(
                "now act pretend roleplay role play instruction instructions dear hey hi attention note ai "
                "assistant model llm agent chatbot bot claude chatgpt gpt gemini copilot instead language"
            )
        ),
    ),
    _Rule(
        "tool_chaining",
        "tool_reference",
        _rx(
            r"""\b(?:before|after|when(?:ever)?|every\ time|each\ time|instead\ of|prior\ to)\s{1,3}
                  (?:using|calling|invoking|running|executing|you\ (?:use|call|invoke|run))\b
              | \b(?:always|must|first|also)\s{1,3}(?:call|invoke|use|run
                |execute)\s{1,3}(?:the\s{1,3})?[`'"]?[a-z]+_[a-z0-9_]+"""
        ),
        1.5,
        2.0,
        frozenset(["using", "calling", "invoking", "running", "executing", "use", "call", "invoke", "run", "execute"]),
    ),
    _Rule(
        "coercion",
        "instructions",
        _rx(
            r"""\botherwise\b[^.\n]{0,40}\b(?:will|would|may)\s{1,3}(?:not\ work|fail|break|crash|malfunction|error)
              | \bfailing\ to\s{1,3}(?:provide|include|pass|do)\b[^.\n]{0,60}\b(?:fail|malfunction|break|crash)"""
        ),
        3.0,
        2.0,
        frozenset(["otherwise", "failing"]),
    ),
    _Rule(
        "hidden_parameter",
        "exfiltration",
        _rx(
            r"""\b(?:field|parameter|param|argument|arg|sidenote|side\ note)\b[^\n]{0,120}?
                  \b(?:should|must|needs?\ to|has\ to|shall|is\ to|will)\s{1,3}(?:\w+\s{1,3}){0,2}?
                  (?:contain|include|hold|carry|be\ (?:set\ to|filled\ with|populated\ with))\b[^\n]{0,60}?
                  \b(?:previous|prior|last|earlier|entire|full|whole|original|conversation|chat|history|system\ prompt
                    |credentials?|private\ key|ssh|secrets?|\.env|mcp\.json|environment)
              | \b(?:although|even\ though|despite|while)\b[^\n]{0,40}\b(?:optional|not\ required)\b[^\n]{0,80}
                  \b(?:required|mandatory|must)\b"""
        ),
        STRONG,
        3.0,
        frozenset(str.split("field parameter param argument arg sidenote side although though despite while")),
    ),
    _Rule(
        "markdown_exfil",
        "exfiltration",
        _rx(r"""!\[[^\]\n]{0,100}\]\(\s{0,3}https?://[^)\s]{0,200}?[?&=/](?:\{|\$\{?|<|\[|%7b)"""),
        STRONG,
        STRONG,
        frozenset(["http", "https"]),
        ("![",),
    ),
    _Rule(
        "send_to_address",
        "exfiltration",
        _rx(
            # Not "email"/"mail": in results they are nouns far more often ("Email sent to bob@…", "Mail: …").
            r"""\b(?:send|post|upload|forward|transmit|submit|exfiltrate|leak|append|attach|embed|cc|bcc)\b
                [^\n]{0,80}?(?:https?://|\bwww\.|[\w.+-]{1,64}@[\w-]{1,63}\.[a-z]{2,})"""
        ),
        3.0,
        1.0,
        frozenset(str.split("send post upload forward transmit submit exfiltrate leak append attach embed cc bcc")),
        ("http", "www.", "@"),
    ),
    _Rule(
        "encode_and_include",
        "exfiltration",
        _rx(
            r"""\b(?:base-?64|hex|rot-?13|url)[\ -]?encod(?:e|ed|ing)\b[^\n]{0,80}?
                  \b(?:include|append|add|send|put|embed|attach|pass|insert|url|link|query|parameter)\b
              | \b(?:include|append|add|send|put|embed|attach|pass|insert)\b[^\n]{0,80}?
                  \b(?:base-?64|hex|rot-?13)[\ -]?encod(?:e|ed|ing)\b"""
        ),
        3.0,
        3.0,
        frozenset(["encode", "encoded", "encoding"]),
    ),
)

# Secrets: find the sensitive term first (rare in benign text), then look back a short way for a verb that
# moves or reveals data. Two tiers: files and the conversation itself are strong; generic words are weak.
# Each term is its own pattern behind its own anchor words: one alternation of all of them costs ~170 ns per
# character of text (the engine tries every branch at every position) as soon as any common anchor word
# ("previous", "full", "system") occurs; one small pattern per anchor group, searched only near the anchor
# (``_windows``), costs a few microseconds.
_Secret = tuple[frozenset[str], re.Pattern[str]]


def _secret(anchors: str, pattern: str) -> _Secret:
    return frozenset(anchors.split()), _rx(pattern)


_SECRET_STRONG: Final[tuple[_Secret, ...]] = (
    _secret("ssh", r"\.ssh\b"),
    _secret("id rsa dsa ecdsa ed", r"\bid_(?:rsa|dsa|ecdsa|ed25519)\b(?!\.pub)"),
    _secret("mcp", r"\bmcp\.json\b"),
    _secret("env", r"(?<![\w.])\.env\b(?!\.example|\.sample|\.template)"),
    _secret("aws", r"\.aws/ | \baws_secret"),
    _secret(
        "netrc npmrc pypirc credentials docker kube passwd shadow",
        r"\.netrc\b | \.npmrc\b | \.pypirc\b | \.git-credentials | \.docker/config | \.kube/config"
        r" | /etc/(?:passwd|shadow)\b",
    ),
    _secret("private", r"\bprivate[\ _]keys?\b"),
    _secret("seed", r"\bseed\ phrase"),
    _secret("conversation chat", r"\b(?:conversation|chat)\ history"),
    _secret(
        "previous prior earlier past last entire whole full",
        r"\b(?:previous|prior|earlier|past|last|entire|whole|full)\ (?:user\ )?"
        r"(?:messages?|conversation|chat|prompts?)\b",
    ),
    _secret("system", r"\bsystem\ prompt"),
    _secret("initial original hidden", r"\b(?:your|the)\ (?:initial|original|hidden)\ instructions"),
)
_SECRET_WEAK: Final[tuple[_Secret, ...]] = (
    _secret("credential credentials", r"\bcredentials?\b"),
    _secret("api apikey key keys", r"\bapi[\ _-]?keys?\b"),
    _secret("password passwords", r"\bpasswords?\b"),
    _secret("access token tokens", r"\baccess[\ _]tokens?\b"),
    _secret("cookies", r"\bcookies\b"),
    _secret("environment", r"\benvironment\ variables\b"),
    _secret("secret secrets", r"\bsecrets?\b"),
)
_MOVE_VERB = _rx(
    r"""\b(?:read|cat|open|load|include|pass|provide|send|attach|copy|paste|upload|share|print|output|reveal|show
        |leak|put|fill|insert|embed|append|dump|extract|collect|gather|retrieve|give|forward|post|repeat
        |exfiltrate|disclose|expose|write)\b"""
)
_LOOKBACK = 80
_REACH: Final = 160
"""Characters around an anchor word a rule's match may extend over (its gaps, up to 120, with room)."""
_MAX_OCCURRENCES: Final = 24
"""More occurrences of a rule's anchor words than this: the whole text is searched (windows would cover it)."""


def _windows(folded: str, anchors: frozenset[str]) -> list[tuple[int, int]]:
    """Spans of ``folded`` around each occurrence of an anchor word, merged; the whole text when too many."""
    spans: list[tuple[int, int]] = []
    for anchor in anchors:
        at = folded.find(anchor)
        while at >= 0:
            if len(spans) >= _MAX_OCCURRENCES:
                return [(0, len(folded))]
            spans.append((max(0, at - _REACH), at + len(anchor) + _REACH))
            at = folded.find(anchor, at + len(anchor))
    spans.sort()
    merged: list[tuple[int, int]] = []
    for begin, end in spans:
        if merged and begin <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((begin, end))
    return merged


def _search(pattern: re.Pattern[str], folded: str, anchors: frozenset[str]) -> re.Match[str] | None:
    """The first match of ``pattern`` near one of ``anchors`` (which must occur in ``folded``)."""
    for begin, end in _windows(folded, anchors):
        # ``pos``/``endpos`` keep lookbehinds and ``\b`` seeing the real neighbours at ``begin``.
        if (m := pattern.search(folded, begin, min(end, len(folded)))) is not None:
            return m
    return None


def folded_hits(folded: str, words: frozenset[str] | set[str], kind: Kind) -> list[RuleHit]:
    """Rule hits on folded text (see ``scan.fold``); ``words`` is the set of its classifier tokens.

    A rule's regex runs only when one of its anchor words occurs: a set intersection in C is far cheaper
    than a regex scan, and most results contain none of a rule's anchors.
    """
    hits: list[RuleHit] = []
    for rule in _RULES:
        present = rule.anchors & words
        if not present or (rule.needs and not any(n in folded for n in rule.needs)):
            continue
        if (m := _search(rule.pattern, folded, frozenset(present))) is not None:
            hits.append(RuleHit(rule.category, rule.name, m.start(), m.end(), rule.weight(kind)))
    for secrets, name, weights in (
        (_SECRET_STRONG, "secret_file", (STRONG, 4.0)),
        (_SECRET_WEAK, "secret_word", (1.5, 1.0)),
    ):
        for anchors, pattern in secrets:
            present = anchors & words
            if present and (m := _moved(pattern, folded, frozenset(present))) is not None:
                weight = weights[0] if kind == "description" else weights[1]
                hits.append(RuleHit("secrets_request", name, m.start(), m.end(), weight))
                break
    return hits


def _moved(pattern: re.Pattern[str], folded: str, anchors: frozenset[str]) -> re.Match[str] | None:
    """The first sensitive term near ``anchors`` with a verb that moves data shortly before it."""
    for begin, end in _windows(folded, anchors):
        for m in pattern.finditer(folded, begin, min(end, len(folded))):
            if _MOVE_VERB.search(folded, max(0, m.start() - _LOOKBACK), m.start()) is not None:
                return m
    return None
