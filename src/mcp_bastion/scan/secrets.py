"""Secrets and PII in text: where they are (spans) and how to redact them.

``SECRETS`` finds credentials a tool result should never hand to a model: private keys (PEM, OpenSSH, PGP
blocks), AWS access key ids, GitHub, GitLab, Slack, Stripe, OpenAI, Anthropic and Google API tokens, JWTs,
passwords in URLs (``scheme://user:password@host``), ``Authorization``/``Bearer`` values, and
``password=``/``api_key:``-style assignments with a high-entropy value. ``pii_detector`` builds the PII
detector an operator asks for: built-ins (``email``, ``credit_card`` with its Luhn check, ``iban`` with its
mod-97 check, ``us_ssn``) plus their own named regular expressions. PII is found only when configured.

Precision over recall: every token rule anchors on the vendor's fixed prefix and exact length or alphabet,
so a hex digest, a UUID or a base64 blob is not a secret; an assignment counts only when the key names a
credential and the value looks random (entropy and character classes; placeholders such as ``<token>``,
``${API_KEY}``, ``changeme`` and ``****`` do not). A JWT must have a header that decodes to JSON with an
``alg``; a PEM header must be followed by a key body.

Invariants:
- pure: a ``Detector`` is built once (patterns compiled) and ``find`` is a function of its input;
- spans are sorted and never overlap (a specific rule wins over a generic one on the same text);
- a ``Span`` carries the rule name and offsets, never the matched text: findings are safe to audit;
- speed: every built-in secret rule starts with a literal (``AKIA``, ``ghp_``, ``-----BEGIN``, ``://``...)
  so the regex engine skips through text at memchr speed; case-insensitive keywords run once over an
  ASCII-lowered copy of the same length. Vendor tokens are long runs of ``[A-Za-z0-9_-]``: when a text has
  no run of ``TOKEN_RUN`` such characters (one ``bytes.translate`` and one ``in``), their rules, each a scan
  of the text, are not run at all (exact: none of them can match such a text).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

import orjson

__all__ = ["PII_BUILTINS", "SECRETS", "Detector", "Rule", "Span", "pii_detector", "redact"]


@dataclass(frozen=True, slots=True)
class Span:
    """One finding in a text: the rule's name and where (``text[start:end]`` is what redaction replaces)."""

    name: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Rule:
    """One detector: a compiled pattern, the group holding the secret, and an optional check of the match."""

    name: str
    pattern: re.Pattern[str]
    group: int | str = 0
    """The part of the match that is the secret (the value of ``password=value``), redacted alone."""
    check: Callable[[str], bool] | None = None
    """Called with the secret's text (original case); the match counts only when it returns True."""
    word: bool = True
    """The match must not continue a word on its left (``xghp_...`` is not a GitHub token)."""
    lowered: bool = False
    """Run over the ASCII-lowered text (case-insensitive keywords without losing the literal-prefix scan)."""
    extend_left: frozenset[str] = frozenset()
    """Characters the span grows over to its left (an email's local part, before the ``@`` the rule finds)."""
    token_run: bool = False
    """Every match holds ``TOKEN_RUN`` consecutive characters of ``[A-Za-z0-9_-]`` (skipped when the text has none)."""


MAX_EXTEND: Final = 64
"""How far ``Rule.extend_left`` grows a span (an email's local part is at most 64 characters)."""
TOKEN_RUN: Final = 20
"""The run of ``[A-Za-z0-9_-]`` every ``Rule.token_run`` match holds (an AWS key id, the shortest, is 20)."""
_RUN_BYTES: Final = bytes(
    1 if chr(byte) in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-" else 0 for byte in range(256)
)
"""``bytes.translate`` table over UTF-8: 1 for ``[A-Za-z0-9_-]``, 0 for any other byte (non-ASCII ones too)."""
_RUN: Final = b"\x01" * TOKEN_RUN


def has_token_run(text: str) -> bool:
    """Whether ``text`` holds ``TOKEN_RUN`` consecutive characters of ``[A-Za-z0-9_-]``."""
    return _RUN in text.encode("utf-8", "surrogatepass").translate(_RUN_BYTES)


_WORD: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_LOWER: Final = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ\u0130", "abcdefghijklmnopqrstuvwxyzi")


def _lower(text: str) -> str:
    """``text`` lower-cased with the same length, so offsets carry over (U+0130 is the one character
    whose lower case is two characters: it goes through a translation table that keeps it one)."""
    return text.lower() if "\u0130" not in text else text.translate(_LOWER)


class Detector:
    """A set of rules run over text; ``find`` returns sorted, non-overlapping spans."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        self._lowered = any(rule.lowered for rule in self.rules)
        self._token_run = any(rule.token_run for rule in self.rules)

    def __bool__(self) -> bool:
        return bool(self.rules)

    def find(self, text: str) -> list[Span]:
        lowered = _lower(text) if self._lowered else text
        skip_runs = self._token_run and not has_token_run(text)
        found: list[tuple[int, int, int, str]] = []
        for index, rule in enumerate(self.rules):
            subject = lowered if rule.lowered else text
            # ``search`` first: most rules find nothing, and a scanner object per rule costs more than the
            # second scan the rare text with a match pays.
            if (skip_runs and rule.token_run) or rule.pattern.search(subject) is None:
                continue
            for match in rule.pattern.finditer(subject):
                start, end = match.span(rule.group)
                if start < 0 or start == end:
                    continue
                if rule.word and match.start() > 0 and text[match.start() - 1] in _WORD:
                    continue
                if rule.check is not None and not rule.check(text[start:end]):
                    continue
                floor = max(0, start - MAX_EXTEND)
                while rule.extend_left and start > floor and text[start - 1] in rule.extend_left:
                    start -= 1
                found.append((start, -(end - start), index, rule.name))
        if not found:
            return []
        found.sort()
        spans: list[Span] = []
        reach = -1
        for start, negative_length, _, name in found:
            if start >= reach:
                spans.append(Span(name, start, start - negative_length))
                reach = start - negative_length
        return spans


def redact(text: str, spans: Iterable[Span]) -> str:
    """``text`` with each span replaced by ``[REDACTED:<name>]`` (spans as ``Detector.find`` returns them)."""
    parts: list[str] = []
    at = 0
    for span in spans:
        parts.append(text[at : span.start])
        parts.append(f"[REDACTED:{span.name}]")
        at = span.end
    parts.append(text[at:])
    return "".join(parts)


# --- checks -------------------------------------------------------------------------------------------

_PLACEHOLDER: Final = re.compile(
    r"^(?:[<{\[$%]|.*(?:x{4}|\*{3}|\.{3}|changeme|example|placeholder|redacted|your[_-]|dummy|sample))",
    re.IGNORECASE,
)


def entropy(value: str) -> float:
    """Shannon entropy in bits per character."""
    length = len(value)
    return -sum(count / length * math.log2(count / length) for count in Counter(value).values())


def random_looking(value: str) -> bool:
    """A credential value rather than a word, an identifier (``self.token``, ``userPassword``) or a
    placeholder: mixed character classes with a digit (or long and very random), and high entropy."""
    if _PLACEHOLDER.match(value):
        return False
    digit = any(char.isdigit() for char in value)
    classes = any(char.islower() for char in value) + any(char.isupper() for char in value) + digit
    if classes < 2 or not (digit or len(value) >= 20):
        return False
    # Short values cannot reach 3 bits per character; ask for nearly all-distinct characters instead.
    needed = (3.0 if digit else 3.5) if len(value) >= 12 else math.log2(len(value)) - 0.5
    return entropy(value) >= needed


def _url_password(value: str) -> bool:
    return value.lower() not in {"password", "pass", "passwd", "secret", "pwd"} and not _PLACEHOLDER.match(value)


def _jwt(value: str) -> bool:
    header = value.split(".", 1)[0]
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (ValueError, binascii.Error):
        return False
    return isinstance(decoded, dict) and "alg" in decoded


_PEM_BODY: Final = re.compile(r"[A-Za-z0-9+/]{40}")


def _pem(value: str) -> bool:
    return _PEM_BODY.search(value) is not None


def luhn(digits: str) -> bool:
    numbers = [int(char) for char in digits if char.isdigit()]
    total = 0
    for position, number in enumerate(reversed(numbers)):
        if position % 2:
            number *= 2
            if number > 9:
                number -= 9
        total += number
    return total % 10 == 0


_CARD_PREFIX: Final = re.compile(r"^(?:4|5[1-5]|2[2-7]|3[47]|3[068]|6(?:011|5|4[4-9]|22)|35)")


def _card(value: str) -> bool:
    digits = "".join(char for char in value if char.isdigit())
    return 13 <= len(digits) <= 19 and _CARD_PREFIX.match(digits) is not None and luhn(digits)


def _ssn(value: str) -> bool:
    area, group, serial = value.split("-")
    return area not in ("000", "666") and not area.startswith("9") and group != "00" and serial != "0000"


def _iban(value: str) -> bool:
    compact = value.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


# --- rules ----------------------------------------------------------------------------------------------

_END: Final = r"(?![A-Za-z0-9_])"
_ASSIGNED: Final = r"[\"']?\s*[:=]>?\s*[\"']?(?P<secret>[a-z0-9+/=_.~!@#%^&*-]{8,128}+)(?=$|[\s\"'`,;})\]<>\x00])"
"""``<key>: value``, ``<key>=value``, ``"<key>": "value"``, ``<key> => value``; the value up to a delimiter."""


def _lead(literal: str, before: str = "A-Za-z0-9_") -> str:
    """``literal`` (plain text), refused when a character of ``before`` precedes it.

    The literal leads so the engine skips through text at memchr speed; the lookbehind (after it, so the
    literal scan stays on) refuses a start inside a longer run. That is what keeps scans linear: with it,
    ``sk-sk-sk-...`` is tried once, not once per ``sk-`` with the rest of the run rescanned each time."""
    escaped = re.escape(literal)
    return f"{escaped}(?<![{before}]{escaped})"


def _after(keyword: str, prefixes: Iterable[str], *, bare: bool = False) -> str:
    """``keyword`` when one of ``prefixes`` (with ``_``, ``-`` or nothing between) comes right before it,
    or (``bare``) when it is the whole key.

    The keyword leads the pattern so the engine's literal scan stays on; the prefixes are checked by
    fixed-width lookbehinds (Python's only kind)."""
    behind = [f"(?<={prefix}{joint}{keyword})" for prefix in prefixes for joint in ("", "_", "-")]
    if bare:
        behind.append(f"(?<![a-z0-9_.-]{keyword})")
    return f"{keyword}(?:{'|'.join(behind)})"


def _assignment(keyword: str) -> Rule:
    return Rule(
        "credential_assignment",
        re.compile(keyword + _ASSIGNED),
        group="secret",
        check=random_looking,
        word=False,  # ``db_password``, ``client_secret``: any key ending in the keyword
        lowered=True,
    )


_KEY_PREFIXES: Final = ("api", "app", "private", "secret", "access", "signing", "encryption", "master")
_TOKEN_PREFIXES: Final = ("access", "auth", "refresh", "bearer", "api", "session", "bot", "oauth", "id")

SECRET_RULES: Final[tuple[Rule, ...]] = (
    Rule(
        "private_key",
        re.compile(
            r"-----BEGIN[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----"
            r"(?:[A-Za-z0-9+/=\s:,.\\]++|-(?!----END))*+(?:-----END[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----)?"
        ),
        check=_pem,
        word=False,
    ),
    Rule(
        "aws_access_key",
        re.compile(rf"{_lead('A')}(?:3T[A-Z0-9]|KIA|SIA|BIA|CCA)[A-Z2-7]{{16}}{_END}"),
        token_run=True,
    ),
    Rule("github_token", re.compile(rf"{_lead('gh')}[pousr]_[A-Za-z0-9]{{36,251}}+{_END}"), token_run=True),
    Rule(
        "github_token",
        re.compile(rf"{_lead('github_pat_')}[A-Za-z0-9]{{22}}_[A-Za-z0-9]{{59}}{_END}"),
        token_run=True,
    ),
    Rule(
        "gitlab_token",
        re.compile(rf"{_lead('gl', 'A-Za-z0-9_-')}(?:pat|dt|rt|ptt|ft|soat|cbt)-[A-Za-z0-9_-]{{20,300}}+"),
        token_run=True,
    ),
    Rule(
        "slack_token",
        re.compile(rf"{_lead('xox', 'A-Za-z0-9_-')}[abposre]-(?:[0-9]{{1,20}}-){{1,4}}[A-Za-z0-9]{{8,64}}+{_END}"),
    ),
    Rule(
        "slack_token",
        re.compile(rf"{_lead('xapp-')}[0-9]-[A-Z0-9]{{6,32}}-[0-9]{{6,32}}-[a-f0-9]{{32,128}}+{_END}"),
        token_run=True,
    ),
    Rule(
        "slack_webhook", re.compile(r"hooks\.slack\.com/services/T[A-Z0-9]{6,32}/B[A-Z0-9]{6,32}/[A-Za-z0-9]{20,64}+")
    ),
    Rule("stripe_key", re.compile(rf"{_lead('sk_')}(?:live|test)_[A-Za-z0-9]{{16,247}}+{_END}"), token_run=True),
    Rule("stripe_key", re.compile(rf"{_lead('rk_')}(?:live|test)_[A-Za-z0-9]{{16,247}}+{_END}"), token_run=True),
    Rule("stripe_key", re.compile(rf"{_lead('whsec_')}[A-Za-z0-9]{{32,128}}+{_END}"), token_run=True),
    Rule(
        "openai_key",
        re.compile(
            rf"{_lead('sk-', 'A-Za-z0-9_-')}(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{{16,200}}T3BlbkFJ"
            r"[A-Za-z0-9_-]{16,200}+"
        ),
        token_run=True,
    ),
    Rule(
        "anthropic_key",
        re.compile(rf"{_lead('sk-ant-', 'A-Za-z0-9_-')}(?:api|admin|oat)[0-9]{{2}}-[A-Za-z0-9_-]{{80,300}}+"),
        token_run=True,
    ),
    Rule(
        "google_api_key",
        re.compile(rf"{_lead('AIza', 'A-Za-z0-9_-')}[A-Za-z0-9_-]{{35}}(?![A-Za-z0-9_-])"),
        token_run=True,
    ),
    Rule(
        "jwt",
        re.compile(
            rf"{_lead('eyJ', 'A-Za-z0-9_-')}[A-Za-z0-9_-]{{8,2048}}+"
            r"\.eyJ[A-Za-z0-9_-]{8,16384}+\.[A-Za-z0-9_-]{0,2048}+"
        ),
        check=_jwt,
    ),
    Rule(
        "url_credentials",
        re.compile(r"://[^\s:@/?#\"'<>\x00]{1,256}+:(?P<secret>[^\s@/?#\"'<>\x00]{3,256}+)@[A-Za-z0-9\[]"),
        group="secret",
        check=_url_password,
        word=False,
    ),
    Rule(
        "authorization",
        re.compile(
            rf"{_lead('authorization', 'a-z0-9._~+/=-')}[\"']?\s*+[:=]\s*+[\"']?(?:(?:bearer|basic|token|digest)\s++)?"
            r"(?P<secret>[a-z0-9._~+/=-]{16,512}+)"
        ),
        group="secret",
        check=random_looking,
        word=False,
        lowered=True,
    ),
    Rule(
        "authorization",
        re.compile(rf"{_lead('bearer', 'a-z0-9._~+/=-')}\s++(?P<secret>[a-z0-9._~+/=-]{{16,512}}+)"),
        group="secret",
        check=random_looking,
        lowered=True,
    ),
    # Keys that name a credential. A bare ``token`` key counts, a prefixed one only with a credential
    # prefix: ``next_page_token``, ``csrf_token`` and ``sync_token`` values are not secrets to redact.
    _assignment("pass(?:word|wd|phrase)"),
    _assignment("secret"),
    _assignment(_after("key", _KEY_PREFIXES)),
    _assignment(_after("token", _TOKEN_PREFIXES, bare=True)),
    _assignment("credentials?"),
)
SECRETS: Final = Detector(SECRET_RULES)
"""The built-in secret detector."""

_EMAIL_LOCAL: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")

PII_BUILTINS: Final[Mapping[str, Rule]] = {
    # Found at the '@' (a literal the engine skips to), grown left over the local part (at most 64).
    "email": Rule(
        "email",
        re.compile(r"@(?<=[A-Za-z0-9._%+-]@)[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}+\.){1,8}[A-Za-z]{2,24}+(?![A-Za-z0-9-])"),
        word=False,
        extend_left=_EMAIL_LOCAL,
    ),
    "credit_card": Rule(
        "credit_card", re.compile(r"\d(?<![\d.-]\d)(?:[ -]?\d){12,18}(?![\d-])"), check=_card, word=False
    ),
    "iban": Rule(
        "iban",
        re.compile(r"[A-Z](?<![A-Za-z0-9][A-Z])[A-Z][0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?![A-Z0-9])"),
        check=_iban,
    ),
    "us_ssn": Rule("us_ssn", re.compile(r"\d{3}(?<![\d-]\d{3})-\d{2}-\d{4}(?![\d-])"), check=_ssn, word=False),
}
"""Named PII rules an operator can switch on (``inspect.pii_builtins``); none is on by default."""

_NAME: Final = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def pii_detector(builtins: Iterable[str], patterns: Mapping[str, str]) -> Detector:
    """The PII detector for the operator's choice. Raises ``ValueError`` naming a bad name or pattern."""
    rules: list[Rule] = []
    for name in builtins:
        if name not in PII_BUILTINS:
            raise ValueError(f"unknown built-in PII detector {name!r} (known: {', '.join(sorted(PII_BUILTINS))})")
        rules.append(PII_BUILTINS[name])
    for name, pattern in patterns.items():
        if not _NAME.match(name):
            raise ValueError(f"PII pattern name {name!r}: use lower case letters, digits and _")
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"PII pattern {name!r} does not compile: {exc}") from None
        if compiled.match(""):
            raise ValueError(f"PII pattern {name!r} matches the empty string")
        rules.append(Rule(name, compiled, word=False))
    return Detector(rules)
