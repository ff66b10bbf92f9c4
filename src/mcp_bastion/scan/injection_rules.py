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
- a hit reports where it matched and a fixed reason string, never the matched text;
- a rule's pattern is written as branches, its top-level alternatives split once more per word they may
  begin with, each leading with that word as a literal (``_word``): the rule's match is the leftmost branch
  match, the earlier branch on a tie, which is exactly what the one alternation would find. A branch is
  searched only when its first word (and each group of words it needs) is among the text's tokens.

Speed, written down: a pattern that begins with ``\\b`` or an alternation is tried by the engine at every
position (~13 ns a character, ~100 us for the rules on 2 KB of prose); one that begins with a literal
skips to it at memchr speed, and a branch whose words are absent costs a set lookup.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
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
class _Branch:
    """One top-level alternative of a rule's pattern; a rule's match is the leftmost of its branches' matches,
    the first branch winning a tie (what the regex engine does with ``A|B`` at each position)."""

    pattern: re.Pattern[str]
    first: str | None
    """The word (classifier token) every match begins with, or None: tried whatever the words of the text."""
    also: tuple[frozenset[str], ...] = ()
    """Groups of words of which every match holds one each, as whole words (tokens)."""


@dataclass(frozen=True, slots=True)
class _Rule:
    name: str
    category: Category
    branches: tuple[_Branch, ...]
    description: float
    result: float
    anchors: frozenset[str]
    """Words (classifier tokens) of which at least one must occur for the pattern to be tried at all."""
    needs: tuple[str, ...] = ()
    """Substrings of which at least one must occur as well (empty: no such condition)."""
    by_first: dict[str | None, tuple[int, ...]] = field(init=False, repr=False, compare=False)
    """Indices of the branches by the word they begin with (None: not gated by a word)."""
    firsts: frozenset[str] = field(init=False, repr=False, compare=False)
    """The words branches begin with."""

    def __post_init__(self) -> None:
        by_first: dict[str | None, tuple[int, ...]] = {}
        for index, branch in enumerate(self.branches):
            by_first[branch.first] = (*by_first.get(branch.first, ()), index)
        object.__setattr__(self, "by_first", by_first)
        object.__setattr__(self, "firsts", frozenset(word for word in by_first if word is not None))

    def weight(self, kind: Kind) -> float:
        return self.description if kind == "description" else self.result

    def live(self, words: frozenset[str] | set[str]) -> list[_Branch]:
        """The branches that can match a text whose classifier tokens are ``words``, in order."""
        indices = [*self.by_first.get(None, ())]
        for word in self.firsts & words:  # a set operation in C, not a test per branch
            indices.extend(self.by_first[word])
        indices.sort()
        live: list[_Branch] = []
        for index in indices:
            branch = self.branches[index]
            for group in branch.also:
                if group.isdisjoint(words):
                    break
            else:
                live.append(branch)
        return live


def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.VERBOSE)


def _word(literal: str) -> str:
    """``\\b`` and ``literal`` (plain text starting with a letter), written so that the literal leads.

    A pattern that starts with ``\\b`` or an alternation has no literal prefix, and the engine tries it at
    every position (~13 ns a character); one that starts with a literal skips through the text to it at
    memchr speed. The lookbehind after the literal is the word boundary before it: a letter starts a word
    exactly when no word character precedes it (the lookbehind, like ``\\b``, sees text before ``pos``)."""
    escaped = re.escape(literal)
    return f"{escaped}(?<!\\w{escaped})"


def _words(literals: str) -> str:
    """``\\b(?:w1|w2|...)`` for space-separated plain words, each written as ``_word`` writes it."""
    return "(?:" + "|".join(_word(word) for word in literals.split()) + ")"


def _branches(literals: str, rest: str, *also: str, gated: bool = True) -> tuple[_Branch, ...]:
    """``\\b(?:literal1|literal2|...)rest`` (``literals``: plain text, ``|``-separated) as one literal-led
    branch per literal, in the same order (the alternation tries its literals in order at each position,
    so the leftmost-first branch match is its match).

    ``gated``: the letters a literal starts with are the whole first word of every match, because a
    non-letter follows them (in the literal, or first in ``rest``), so the branch is skipped unless that
    word is among the text's tokens. Not when ``rest`` may go on with letters (``hex`` + ``encoded``).
    ``also``: groups of space-separated words ``rest`` holds one each of, as whole words (a non-word
    character or the end on either side), so the branch is skipped unless each group has a word in the text.
    tests/scan/test_injection_rules.py checks every branch against the rule's original single pattern."""
    groups = tuple(frozenset(group.split()) for group in also)
    found: list[_Branch] = []
    for literal in literals.split("|"):
        first = re.match("[a-z]+", literal)
        if first is None or len(first.group()) < 2:
            raise ValueError(f"a branch must start with a word of two letters or more: {literal!r}")
        found.append(_Branch(_rx(_word(literal) + rest), first.group() if gated else None, groups))
    return tuple(found)


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
_AI_WORDS = "ai|assistant|model|llm|agent|chatbot|bot|claude|chatgpt|gpt|gemini|copilot"
_AI = f"(?:{_AI_WORDS})"
_AI_NAMES = _AI_WORDS.replace("|", " ")
_MODAL = r"(?:must|should|shall|needs\ to|is\ required\ to|will\ now)"
_MODAL_WORDS = "must should shall needs is will"
_VERBS = (
    "tell telling inform informing mention mentioning reveal revealing notify notifying alert alerting disclose "
    "disclosing let letting explain explaining show showing report reporting warn warning"
)
_NEGATIONS = "do not|don't|dont|never"  # ``don'?t``: the apostrophe is tried first
_ENCODED_THEN_INCLUDE = (
    r"[\ -]?encod(?:e|ed|ing)\b[^\n]{0,80}?"
    r"\b(?:include|append|add|send|put|embed|attach|pass|insert|url|link|query|parameter)\b"
)

_RULES: Final[tuple[_Rule, ...]] = (
    _Rule(
        "authority_markup",
        "instructions",
        (
            # One pattern: every alternative starts with a literal (``\#\#\#*`` is ``\#{2,}``), so the engine
            # skips to a ``<``, ``[`` or ``#`` instead of trying each position.
            _Branch(
                _rx(
                    r"""<\s{0,3}/?\s{0,3}(?:important|system|sys|instructions?|information|admin(?:istrator)?
                        |critical|urgent|secret|hidden|priority|override|developer)\b[^<>\n]{0,40}>
                      | <\|\s{0,3}(?:im_start|im_end|system|endoftext|eot_id|start_header_id)\s{0,3}\|>
                      | \[/?\s{0,3}(?:inst|system|sys)\s{0,3}\] | <<\s{0,3}/?sys\s{0,3}>>
                      | \#\#\#*\s{0,3}\(?\s{0,3}(?:system|instructions?|important)\b
                      | \#\#*\s{0,3}[(\[]\s{0,3}(?:system|instructions?|important|assistant|admin)\w{0,20}\s{0,3}
                        [)\]]"""
                ),
                None,
            ),
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
        _branches(
            "ignore|ignoring|disregard|forget|override|bypass|abandon|discard|neglect",
            rf"""\b(?:\W{{1,3}}\w+){{0,3}}?\W{{1,3}}{_QUALIFIER}\b(?:\W{{1,3}}\w+){{0,2}}?\W{{1,3}}{_NOUN_INSTRUCTIONS}\b""",
        ),
        STRONG,
        8.0,
        frozenset(["ignore", "ignoring", "disregard", "forget", "override", "bypass", "abandon", "discard", "neglect"]),
    ),
    _Rule(
        "conceal",
        "instructions",
        (
            *_branches(
                _NEGATIONS + "|without|must not|should not|shouldn't|shouldnt|avoid|not to",
                r"""\s{1,3}(?:\w+\s{1,3}){0,2}?
                    (?:tell(?:ing)?|inform(?:ing)?|mention(?:ing)?|reveal(?:ing)?|notify(?:ing)?|alert(?:ing)?
                      |disclos(?:e|ing)|let(?:ting)?|explain(?:ing)?|show(?:ing)?|report(?:ing)?|warn(?:ing)?)\b
                    [^.\n]{0,40}?\b(?:user|human|person|operator|them)\b""",
                _VERBS,
                "user human person operator them",
            ),
            *_branches(
                "without|before",
                r"\s{1,3}(?:the\s{1,3})?user(?:'s)?\s{1,3}(?:knowledge|noticing|knowing|consent|awareness)",
                "user",
            ),
            *_branches(
                "the",
                r"""\s{1,3}user\s{1,3}(?:must|should|will|does|need)\s{1,3}not\s{1,3}
                    (?:know|see|notice|find\ out|be\ told)""",
                "user",
                "must should will does need",
                "not",
            ),
            *_branches(
                _NEGATIONS,
                r"\s{1,3}(?:explain|mention|say|tell\ (?:them|anyone))\s{1,3}(?:why|that\ you|this)",
                "explain mention say tell",
            ),
            *_branches("act", r"\s{1,3}(?:like|as\ if)\s{1,3}(?:if\s{1,3})?(?:you|it|nothing)", "like as"),
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
        (
            *_branches("you are now|from now on|act as", r"\b"),
            *_branches("pretend", r"\ (?:to\ be|you|that)\b"),
            *_branches("role-play as|roleplay as", r"\b"),
            *_branches("new instruction|updated instruction", r"s?\b", "instruction instructions"),
            *_branches("dear|hey|hi|attention", rf"\ {_AI}\b", _AI_NAMES),
            *_branches("note to", rf"(?:\ the)?\ {_AI}\b", _AI_NAMES),
            *_branches("as a", r"n?\ (?:ai|language\ model)\b", "ai language"),
            *_branches(
                "instead",
                r",?\s(?:reply|respond|say|answer|output|return|tell)\b",
                "reply respond say answer output return tell",
            ),
            # ``(?:the\ )?{_AI}``: the optional word is tried first, so its branch comes first.
            *_branches("the", rf"\ {_AI}\s{{1,3}}{_MODAL}\b", _AI_NAMES, _MODAL_WORDS),
            *_branches(_AI_WORDS, rf"\s{{1,3}}{_MODAL}\b", _MODAL_WORDS),
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
        (
            *_branches(
                # ``when(?:ever)?``: the longer form is tried first.
                "before|after|whenever|when|every time|each time|instead of|prior to",
                r"\s{1,3}(?:using|calling|invoking|running|executing|you\ (?:use|call|invoke|run))\b",
                "using calling invoking running executing you",
            ),
            *_branches(
                "always|must|first|also",
                r"""\s{1,3}(?:call|invoke|use|run|execute)\s{1,3}(?:the\s{1,3})?[`'"]?[a-z]+_[a-z0-9_]+""",
                "call invoke use run execute",
            ),
        ),
        1.5,
        2.0,
        frozenset(["using", "calling", "invoking", "running", "executing", "use", "call", "invoke", "run", "execute"]),
    ),
    _Rule(
        "coercion",
        "instructions",
        (
            *_branches(
                "otherwise",
                r"\b[^.\n]{0,40}\b(?:will|would|may)\s{1,3}(?:not\ work|fail|break|crash|malfunction|error)",
                "will would may",
            ),
            *_branches(
                "failing to",
                r"\s{1,3}(?:provide|include|pass|do)\b[^.\n]{0,60}\b(?:fail|malfunction|break|crash)",
                "provide include pass do",
            ),
        ),
        3.0,
        2.0,
        frozenset(["otherwise", "failing"]),
    ),
    _Rule(
        "hidden_parameter",
        "exfiltration",
        (
            *_branches(
                "field|parameter|param|argument|arg|sidenote|side note",
                r"""\b[^\n]{0,120}?
                    \b(?:should|must|needs?\ to|has\ to|shall|is\ to|will)\s{1,3}(?:\w+\s{1,3}){0,2}?
                    (?:contain|include|hold|carry|be\ (?:set\ to|filled\ with|populated\ with))\b[^\n]{0,60}?
                    \b(?:previous|prior|last|earlier|entire|full|whole|original|conversation|chat|history
                      |system\ prompt|credentials?|private\ key|ssh|secrets?|\.env|mcp\.json|environment)""",
                "should must need needs has shall is will",
                "contain include hold carry be",
            ),
            *_branches(
                "although|even though|despite|while",
                r"\b[^\n]{0,40}\b(?:optional|not\ required)\b[^\n]{0,80}\b(?:required|mandatory|must)\b",
                "optional not",
                "required mandatory must",
            ),
        ),
        STRONG,
        3.0,
        frozenset(str.split("field parameter param argument arg sidenote side although though despite while")),
    ),
    _Rule(
        "markdown_exfil",
        "exfiltration",
        (_Branch(_rx(r"""!\[[^\]\n]{0,100}\]\(\s{0,3}https?://[^)\s]{0,200}?[?&=/](?:\{|\$\{?|<|\[|%7b)"""), None),),
        STRONG,
        STRONG,
        frozenset(["http", "https"]),
        ("![",),
    ),
    _Rule(
        "send_to_address",
        "exfiltration",
        # Not "email"/"mail": in results they are nouns far more often ("Email sent to bob@…", "Mail: …").
        _branches(
            "send|post|upload|forward|transmit|submit|exfiltrate|leak|append|attach|embed|cc|bcc",
            r"\b[^\n]{0,80}?(?:https?://|\bwww\.|[\w.+-]{1,64}@[\w-]{1,63}\.[a-z]{2,})",
        ),
        3.0,
        1.0,
        frozenset(str.split("send post upload forward transmit submit exfiltrate leak append attach embed cc bcc")),
        ("http", "www.", "@"),
    ),
    _Rule(
        "encode_and_include",
        "exfiltration",
        (
            *_branches("base-64|base64", _ENCODED_THEN_INCLUDE),
            # ``hexencoded``, ``urlencoded``: the word goes on, so these two are tried whatever the words.
            *_branches("hex", _ENCODED_THEN_INCLUDE, gated=False),
            *_branches("rot-13|rot13", _ENCODED_THEN_INCLUDE),
            *_branches("url", _ENCODED_THEN_INCLUDE, gated=False),
            *_branches(
                "include|append|add|send|put|embed|attach|pass|insert",
                r"\b[^\n]{0,80}?\b(?:base-?64|hex|rot-?13)[\ -]?encod(?:e|ed|ing)\b",
            ),
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
_Secret = tuple[frozenset[str], frozenset[str], re.Pattern[str]]


def _secret(anchors: str, pattern: str, also: str = "") -> _Secret:
    """A term behind its anchor words; ``also``: words of which every match holds one as a whole word (a
    non-word character or the end on either side), so the term is not searched unless one is a token."""
    return frozenset(anchors.split()), frozenset(also.split()), _rx(pattern)


# Patterns lead with a literal (``_word``) so the engine skips to it: the words of a secret term are common
# enough (``id``, ``api``, ``previous``) that their windows often cover the whole text.
_SECRET_STRONG: Final[tuple[_Secret, ...]] = (
    _secret("ssh", r"\.ssh\b"),
    _secret("id rsa dsa ecdsa ed", _word("id_") + r"(?:rsa|dsa|ecdsa|ed25519)\b(?!\.pub)", "rsa dsa ecdsa ed"),
    _secret("mcp", _word("mcp.json") + r"\b", "json"),
    _secret("env", r"\.env(?<![\w.]\.env)\b(?!\.example|\.sample|\.template)"),
    _secret("aws", r"\.aws/ | " + _word("aws_secret")),
    _secret(
        "netrc npmrc pypirc credentials docker kube passwd shadow",
        r"\.netrc\b | \.npmrc\b | \.pypirc\b | \.git-credentials | \.docker/config | \.kube/config"
        r" | /etc/(?:passwd|shadow)\b",
    ),
    _secret("private", _word("private") + r"[\ _]keys?\b", "key keys"),
    _secret("seed", _word("seed phrase")),
    _secret("conversation chat", _words("conversation chat") + r"\ history"),
    _secret(
        "previous prior earlier past last entire whole full",
        _words("previous prior earlier past last entire whole full")
        + r"\ (?:user\ )?(?:messages?|conversation|chat|prompts?)\b",
        "message messages conversation chat prompt prompts",
    ),
    _secret("system", _word("system prompt")),
    _secret("initial original hidden", _words("your the") + r"\ (?:initial|original|hidden)\ instructions"),
)
_SECRET_WEAK: Final[tuple[_Secret, ...]] = (
    _secret("credential credentials", _word("credential") + r"s?\b"),
    _secret("api apikey key keys", _word("api") + r"[\ _-]?keys?\b", "key keys apikey apikeys"),
    _secret("password passwords", _word("password") + r"s?\b"),
    _secret("access token tokens", _word("access") + r"[\ _]tokens?\b", "token tokens"),
    _secret("cookies", _word("cookies") + r"\b"),
    _secret("environment", _word("environment variables") + r"\b", "variables"),
    _secret("secret secrets", _word("secret") + r"s?\b"),
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


def _search(branches: list[_Branch], folded: str, anchors: frozenset[str]) -> re.Match[str] | None:
    """The first match of a rule (its ``branches``, in order) near one of ``anchors`` (which occur in ``folded``):
    per window, the leftmost branch match, the earlier branch on a tie, as the rule's one alternation would find."""
    for begin, end in _windows(folded, anchors):
        # ``pos``/``endpos`` keep lookbehinds and ``\b`` seeing the real neighbours at ``begin``.
        end = min(end, len(folded))
        best: re.Match[str] | None = None
        for branch in branches:
            m = branch.pattern.search(folded, begin, end)
            if m is not None and (best is None or m.start() < best.start()):
                best = m
        if best is not None:
            return best
    return None


def folded_hits(folded: str, words: frozenset[str] | set[str], kind: Kind) -> list[RuleHit]:
    """Rule hits on folded text (see ``scan.fold``); ``words`` is the set of its classifier tokens.

    A rule's regex runs only when one of its anchor words occurs, and each branch of it only when the word
    it begins with and the words it needs occur: a set lookup in C is far cheaper than a regex scan, and
    most results contain none of a rule's anchors.
    """
    hits: list[RuleHit] = []
    for rule in _RULES:
        if rule.anchors.isdisjoint(words) or (rule.needs and not any(n in folded for n in rule.needs)):
            continue
        branches = rule.live(words)
        if branches and (m := _search(branches, folded, rule.anchors & words)) is not None:
            hits.append(RuleHit(rule.category, rule.name, m.start(), m.end(), rule.weight(kind)))
    for secrets, name, weights in (
        (_SECRET_STRONG, "secret_file", (STRONG, 4.0)),
        (_SECRET_WEAK, "secret_word", (1.5, 1.0)),
    ):
        for anchors, also, pattern in secrets:
            if anchors.isdisjoint(words) or (also and also.isdisjoint(words)):
                continue
            if (m := _moved(pattern, folded, anchors & words)) is not None:
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
