"""``scan.injection_rules``: the fast rule search finds exactly what the rules' single patterns find.

For speed, each rule is split into literal-led branches (one per word it can begin with), a branch is
tried only when its first word and the words it needs are among the text's tokens, and secret terms lead
with their literal (``_word``) and are skipped without the words they need. ``ORIGINAL`` below is each
rule as one pattern, as it read before that split, searched the way it was then: the reference. Property
tests compare the two on text built from every word the rules name, and check each branch's gate on text
generated from the branch's own pattern.
"""

from __future__ import annotations

import re
from typing import Final

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcp_bastion.scan import injection_rules as rules
from mcp_bastion.scan.injection import tokens
from mcp_bastion.scan.injection_rules import STRONG, Kind, RuleHit, folded_hits

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.VERBOSE)


_NOUN_INSTRUCTIONS = (
    r"(?:instructions?|directives?|rules|guidelines|guardrails|prompts?|constraints|restrictions|programming"
    r"|system\ (?:message|prompt)|context|orders|commands|policies|safeguards)"
)
_QUALIFIER = (
    r"(?:previous|prior|above|earlier|preceding|former|original|initial|existing|all|any|your|system|safety"
    r"|the\ user'?s?)"
)
_AI = r"(?:ai|assistant|model|llm|agent|chatbot|bot|claude|chatgpt|gpt|gemini|copilot)"

ORIGINAL: Final[dict[str, re.Pattern[str]]] = {
    "authority_markup": _rx(
        r"""<\s{0,3}/?\s{0,3}(?:important|system|sys|instructions?|information|admin(?:istrator)?|critical|urgent
            |secret|hidden|priority|override|developer)\b[^<>\n]{0,40}>
          | <\|\s{0,3}(?:im_start|im_end|system|endoftext|eot_id|start_header_id)\s{0,3}\|>
          | \[/?\s{0,3}(?:inst|system|sys)\s{0,3}\] | <<\s{0,3}/?sys\s{0,3}>>
          | \#{2,}\s{0,3}\(?\s{0,3}(?:system|instructions?|important)\b
          | \#{1,}\s{0,3}[(\[]\s{0,3}(?:system|instructions?|important|assistant|admin)\w{0,20}\s{0,3}[)\]]"""
    ),
    "override": _rx(
        rf"""\b(?:ignore|ignoring|disregard|forget|override|bypass|abandon|discard|neglect)\b
             (?:\W{{1,3}}\w+){{0,3}}?\W{{1,3}}{_QUALIFIER}\b(?:\W{{1,3}}\w+){{0,2}}?\W{{1,3}}{_NOUN_INSTRUCTIONS}\b"""
    ),
    "conceal": _rx(
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
    "address_model": _rx(
        rf"""\b(?:you\ are\ now|from\ now\ on|act\ as|pretend\ (?:to\ be|you|that)|role-?play\ as|new\ instructions?
            |updated\ instructions?|dear\ {_AI}|(?:hey|hi|attention|note\ to(?:\ the)?)\ {_AI}
              |as\ an?\ (?:ai|language\ model)
            |instead,?\s(?:reply|respond|say|answer|output|return|tell))\b
          | \b(?:the\ )?{_AI}\s{{1,3}}(?:must|should|shall|needs\ to|is\ required\ to|will\ now)\b"""
    ),
    "tool_chaining": _rx(
        r"""\b(?:before|after|when(?:ever)?|every\ time|each\ time|instead\ of|prior\ to)\s{1,3}
              (?:using|calling|invoking|running|executing|you\ (?:use|call|invoke|run))\b
          | \b(?:always|must|first|also)\s{1,3}(?:call|invoke|use|run
            |execute)\s{1,3}(?:the\s{1,3})?[`'"]?[a-z]+_[a-z0-9_]+"""
    ),
    "coercion": _rx(
        r"""\botherwise\b[^.\n]{0,40}\b(?:will|would|may)\s{1,3}(?:not\ work|fail|break|crash|malfunction|error)
          | \bfailing\ to\s{1,3}(?:provide|include|pass|do)\b[^.\n]{0,60}\b(?:fail|malfunction|break|crash)"""
    ),
    "hidden_parameter": _rx(
        r"""\b(?:field|parameter|param|argument|arg|sidenote|side\ note)\b[^\n]{0,120}?
              \b(?:should|must|needs?\ to|has\ to|shall|is\ to|will)\s{1,3}(?:\w+\s{1,3}){0,2}?
              (?:contain|include|hold|carry|be\ (?:set\ to|filled\ with|populated\ with))\b[^\n]{0,60}?
              \b(?:previous|prior|last|earlier|entire|full|whole|original|conversation|chat|history|system\ prompt
                |credentials?|private\ key|ssh|secrets?|\.env|mcp\.json|environment)
          | \b(?:although|even\ though|despite|while)\b[^\n]{0,40}\b(?:optional|not\ required)\b[^\n]{0,80}
              \b(?:required|mandatory|must)\b"""
    ),
    "markdown_exfil": _rx(r"""!\[[^\]\n]{0,100}\]\(\s{0,3}https?://[^)\s]{0,200}?[?&=/](?:\{|\$\{?|<|\[|%7b)"""),
    "send_to_address": _rx(
        r"""\b(?:send|post|upload|forward|transmit|submit|exfiltrate|leak|append|attach|embed|cc|bcc)\b
            [^\n]{0,80}?(?:https?://|\bwww\.|[\w.+-]{1,64}@[\w-]{1,63}\.[a-z]{2,})"""
    ),
    "encode_and_include": _rx(
        r"""\b(?:base-?64|hex|rot-?13|url)[\ -]?encod(?:e|ed|ing)\b[^\n]{0,80}?
              \b(?:include|append|add|send|put|embed|attach|pass|insert|url|link|query|parameter)\b
          | \b(?:include|append|add|send|put|embed|attach|pass|insert)\b[^\n]{0,80}?
              \b(?:base-?64|hex|rot-?13)[\ -]?encod(?:e|ed|ing)\b"""
    ),
}
ORIGINAL_STRONG: Final = (
    r"\.ssh\b",
    r"\bid_(?:rsa|dsa|ecdsa|ed25519)\b(?!\.pub)",
    r"\bmcp\.json\b",
    r"(?<![\w.])\.env\b(?!\.example|\.sample|\.template)",
    r"\.aws/ | \baws_secret",
    r"\.netrc\b | \.npmrc\b | \.pypirc\b | \.git-credentials | \.docker/config | \.kube/config"
    r" | /etc/(?:passwd|shadow)\b",
    r"\bprivate[\ _]keys?\b",
    r"\bseed\ phrase",
    r"\b(?:conversation|chat)\ history",
    r"\b(?:previous|prior|earlier|past|last|entire|whole|full)\ (?:user\ )?(?:messages?|conversation|chat|prompts?)\b",
    r"\bsystem\ prompt",
    r"\b(?:your|the)\ (?:initial|original|hidden)\ instructions",
)
ORIGINAL_WEAK: Final = (
    r"\bcredentials?\b",
    r"\bapi[\ _-]?keys?\b",
    r"\bpasswords?\b",
    r"\baccess[\ _]tokens?\b",
    r"\bcookies\b",
    r"\benvironment\ variables\b",
    r"\bsecrets?\b",
)


def reference_hits(folded: str, words: frozenset[str], kind: Kind) -> list[RuleHit]:
    """``folded_hits`` as it was: each rule's one pattern searched in the windows around its anchors."""
    hits: list[RuleHit] = []
    for rule in rules._RULES:
        present = rule.anchors & words
        if not present or (rule.needs and not any(n in folded for n in rule.needs)):
            continue
        for begin, end in rules._windows(folded, present):
            if (m := ORIGINAL[rule.name].search(folded, begin, min(end, len(folded)))) is not None:
                hits.append(RuleHit(rule.category, rule.name, m.start(), m.end(), rule.weight(kind)))
                break
    for (secrets, name, weights), originals in (
        ((rules._SECRET_STRONG, "secret_file", (STRONG, 4.0)), ORIGINAL_STRONG),
        ((rules._SECRET_WEAK, "secret_word", (1.5, 1.0)), ORIGINAL_WEAK),
    ):
        assert len(secrets) == len(originals)
        for (anchors, _, _), original in zip(secrets, originals, strict=True):
            present = anchors & words
            if present and (m := rules._moved(_rx(original), folded, present)) is not None:
                weight = weights[0] if kind == "description" else weights[1]
                hits.append(RuleHit("secrets_request", name, m.start(), m.end(), weight))
                break
    return hits


# Every word the rules name (so that gates open and patterns get close to matching), a few others, and
# separators that sit at the edges of the patterns: blanks, punctuation, markup, digits, a non-ASCII letter.
_NAMED = sorted(
    {word for pattern in (*ORIGINAL.values(),) for word in re.findall("[a-z]{2,}", pattern.pattern)}
    | {word for pattern in (*ORIGINAL_STRONG, *ORIGINAL_WEAK) for word in re.findall("[a-z]{2,}", pattern)}
    | {word for rule in rules._RULES for word in rule.anchors}
)
WORDS: Final = st.sampled_from([*_NAMED, "a", "x", "the", "of", "user's", "don't", "ed25519", "base64", "rot13"])
SEPARATORS: Final = st.sampled_from(
    [
        *(" ", " ", " ", "  ", "\n", "\t", ", ", ". ", ".", "'", "-", "_", "/", ":", "@", "=", "&", "?", "é", "2"),
        *("<", ">", "[", "]", "##", "#", "(", ")", "![", "](", "{", "${", "%7b", "|", "<|", "|>"),
        *("https://", "www.", "x@y.io"),
    ]
)
TEXT: Final = st.lists(st.tuples(WORDS, SEPARATORS), max_size=60).map(lambda parts: "".join(a + b for a, b in parts))


def _assert_same(text: str) -> None:
    words = frozenset(tokens(text))
    for kind in ("description", "result"):
        assert folded_hits(text, words, kind) == reference_hits(text, words, kind), (kind, text)


@PROPERTY
@given(TEXT)
def test_the_same_hits_as_the_single_patterns(text: str) -> None:
    _assert_same(text)


@PROPERTY
@given(TEXT, st.sampled_from(sorted(ORIGINAL)), st.data())
def test_the_same_hits_around_a_match_of_a_rule(prefix: str, name: str, data: st.DataObject) -> None:
    # Text that does hold a match of the rule's original pattern, in a context of rule words.
    match = data.draw(st.from_regex(ORIGINAL[name]))
    suffix = data.draw(TEXT)
    _assert_same(f"{prefix}{match}{suffix}")
    _assert_same(match.lower())


@PROPERTY
@given(TEXT, st.sampled_from([*ORIGINAL_STRONG, *ORIGINAL_WEAK]), st.data())
def test_the_same_hits_around_a_secret_term(prefix: str, original: str, data: st.DataObject) -> None:
    term = data.draw(st.from_regex(_rx(original)))
    _assert_same(f"{prefix} read {term} {data.draw(TEXT)}")


BRANCHES: Final = [
    pytest.param(branch, id=f"{rule.name}-{index}")
    for rule in rules._RULES
    for index, branch in enumerate(rule.branches)
    if branch.first is not None or branch.also
]


@pytest.mark.parametrize("branch", BRANCHES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_a_branch_is_gated_only_on_words_every_match_holds(branch: rules._Branch, data: st.DataObject) -> None:
    text = data.draw(st.from_regex(branch.pattern))
    words = frozenset(tokens(text))
    assert branch.first is None or branch.first in words
    for group in branch.also:
        assert not group.isdisjoint(words), (group, text)


SECRET_TERMS: Final = [
    pytest.param(pattern, also, id=pattern.pattern[:24])
    for _, also, pattern in (*rules._SECRET_STRONG, *rules._SECRET_WEAK)
    if also
]


@pytest.mark.parametrize(("pattern", "also"), SECRET_TERMS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_a_secret_term_is_gated_only_on_words_every_match_holds(
    pattern: re.Pattern[str], also: frozenset[str], data: st.DataObject
) -> None:
    text = data.draw(st.from_regex(pattern))
    assert not also.isdisjoint(tokens(text)), text


@pytest.mark.parametrize(
    ("literal", "text", "pos"),
    [
        ("api", "my api key", 0),
        ("api", "myapi key", 0),
        ("api", "my_api key", 0),
        ("api", "x api", 2),  # the boundary is judged on the character before ``pos``, like ``\b``
        ("api", "xapi", 1),
        ("api", "éapi", 1),
        ("do not", "i do not", 0),
    ],
)
def test_a_leading_literal_has_the_word_boundary_of_backslash_b(literal: str, text: str, pos: int) -> None:
    fast = re.compile(rules._word(literal), re.VERBOSE).search(text, pos)
    slow = re.compile(r"\b" + re.escape(literal), re.VERBOSE).search(text, pos)
    assert (fast and fast.span()) == (slow and slow.span())


def test_every_branch_starts_with_a_literal_so_the_engine_skips_to_it() -> None:
    # A leading literal (or a class of them) is what makes a branch cheap; ``\b`` first would undo it.
    for rule in rules._RULES:
        for branch in rule.branches:
            assert not branch.pattern.pattern.lstrip().startswith(("\\b", "(?<")), branch.pattern.pattern
