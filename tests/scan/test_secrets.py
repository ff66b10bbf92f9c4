"""``scan.secrets``: credentials and configured PII found precisely, look-alikes left alone, spans redacted.

Test tokens are assembled from parts at run time, so no scanner mistakes this file for a leak.
"""

from __future__ import annotations

import base64
import re

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcp_bastion.scan import secrets
from mcp_bastion.scan.secrets import (
    MAX_EXTEND,
    PII_BUILTINS,
    SECRETS,
    TOKEN_RUN,
    Detector,
    Rule,
    Span,
    has_token_run,
    luhn,
    pii_detector,
    redact,
)

ALNUM = "aB3dE5fG7hJ9kL2mN4pQ6rS8tU1vW0xYz"


def chars(n: int, alphabet: str = ALNUM) -> str:
    return (alphabet * (n // len(alphabet) + 1))[:n]


def b64url(value: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(value)).rstrip(b"=").decode()


JWT = f"{b64url({'alg': 'HS256', 'typ': 'JWT'})}.{b64url({'sub': '1234567890', 'name': 'A'})}.{chars(43)}"
PEM_BODY = "MIIEowIBAAKCAQEAvQ4kQ2mKZk8f0n7Wl3Yc1hT9qJ5r2bXvR8sZr0p9hZyq3Jf2\nb3Vx0m1Hq7nL6tYk9sW2eR4dF5gH6j=="
AWS = "AK" + "IA" + "IOSFODNN7EXAMPLE"
OPENSSH_ESCAPED = (  # as it reads inside a JSON string that was itself serialised into a text block
    f"-----BEGIN OPENSSH PRIVATE KEY-----\\n{PEM_BODY.replace(chr(10), '')}\\n-----END OPENSSH PRIVATE KEY-----"
)


def names(text: str, detector: Detector = SECRETS) -> list[str]:
    return [span.name for span in detector.find(text)]


@pytest.mark.parametrize(
    ("text", "secret", "name"),
    [
        pytest.param(f"key {AWS} here", AWS, "aws_access_key", id="aws-akia"),
        pytest.param(
            "id=AS" + "IA" + "Y34FZKBOKMUTVV7A,", "AS" + "IA" + "Y34FZKBOKMUTVV7A", "aws_access_key", id="aws-asia"
        ),
        pytest.param(f"token gh{'p_'}{chars(36)}.", f"ghp_{chars(36)}", "github_token", id="github-classic"),
        pytest.param(
            f"github{'_pat_'}{chars(22)}_{chars(59)}",
            f"github_pat_{chars(22)}_{chars(59)}",
            "github_token",
            id="github-fine",
        ),
        pytest.param(f"GL: gl{'pat-'}{chars(20)}", f"glpat-{chars(20)}", "gitlab_token", id="gitlab"),
        pytest.param(
            f"xo{'xb-'}1234567890-1234567890123-{chars(24)}",
            f"xoxb-1234567890-1234567890123-{chars(24)}",
            "slack_token",
            id="slack-bot",
        ),
        pytest.param(
            f"https://hooks.slack.com/services/T0{'1234567'}/B0{'7654321'}/{chars(24)}",
            f"hooks.slack.com/services/T01234567/B07654321/{chars(24)}",
            "slack_webhook",
            id="slack-webhook",
        ),
        pytest.param(f"sk{'_live_'}{chars(24)}", f"sk_live_{chars(24)}", "stripe_key", id="stripe-secret"),
        pytest.param(
            f"OPENAI_KEY sk-{'proj-'}{chars(40)}T3Blbk{'FJ'}{chars(40)}",
            f"sk-proj-{chars(40)}T3BlbkFJ{chars(40)}",
            "openai_key",
            id="openai",
        ),
        pytest.param(f"sk-ant-{'api03-'}{chars(93)}", f"sk-ant-api03-{chars(93)}", "anthropic_key", id="anthropic"),
        pytest.param(f"AI{'za'}{chars(35)}", f"AIza{chars(35)}", "google_api_key", id="google"),
        pytest.param(f"session={JWT};", JWT, "jwt", id="jwt"),
        pytest.param(
            f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\n-----END RSA PRIVATE KEY-----",
            f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\n-----END RSA PRIVATE KEY-----",
            "private_key",
            id="pem-rsa",
        ),
        pytest.param(
            OPENSSH_ESCAPED,
            OPENSSH_ESCAPED,
            "private_key",
            id="pem-json-escaped",
        ),
        pytest.param(
            f"-----BEGIN PRIVATE KEY-----\n{PEM_BODY}",
            f"-----BEGIN PRIVATE KEY-----\n{PEM_BODY}",
            "private_key",
            id="pem-truncated",
        ),
        pytest.param("postgres://admin:S3cr3tP4ss@db:5432/x", "S3cr3tP4ss", "url_credentials", id="url-password"),
        pytest.param(
            "Authorization: Basic YWxhZGRpbjpvcGVuc2VzYW1l", "YWxhZGRpbjpvcGVuc2VzYW1l", "authorization", id="basic"
        ),
        pytest.param(f"curl -H 'Bearer {chars(32)}'", chars(32), "authorization", id="bearer"),
        pytest.param('{"db_password": "Sup3rS3cret!x"}', "Sup3rS3cret!x", "credential_assignment", id="json-password"),
        pytest.param("export CLIENT_SECRET=q8Zr4Lw1Vx9Kp2", "q8Zr4Lw1Vx9Kp2", "credential_assignment", id="env-secret"),
        pytest.param("x-api-key: 8f2bD91c7e6a4B5d", "8f2bD91c7e6a4B5d", "credential_assignment", id="api-key-header"),
        pytest.param("token: 3f2a9c1d8e7b6a5f4e3d", "3f2a9c1d8e7b6a5f4e3d", "credential_assignment", id="bare-token"),
        pytest.param("access_token=ya29Abc1Def2Ghi3", "ya29Abc1Def2Ghi3", "credential_assignment", id="access-token"),
        pytest.param(
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYzzzzKEY",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzzzzKEY",
            "credential_assignment",
            id="aws-secret",
        ),
    ],
)
def test_finds_secrets(text: str, secret: str, name: str) -> None:
    spans = SECRETS.find(text)
    assert [(span.name, text[span.start : span.end]) for span in spans] == [(name, secret)]
    redacted = redact(text, spans)
    assert secret not in redacted
    assert f"[REDACTED:{name}]" in redacted


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", id="hex-digest"),
        pytest.param("commit 4f37e86c2d1b5a0e9f8d7c6b5a4f3e2d1c0b9a8f", id="git-sha"),
        pytest.param("id 550e8400-e29b-41d4-a716-446655440000", id="uuid"),
        pytest.param("data: aGVsbG8gd29ybGQgdGhpcyBpcyBub3QgYSBzZWNyZXQgYXQgYWxs", id="base64-blob"),
        pytest.param(f"X{AWS}", id="aws-inside-a-word"),
        pytest.param("AKIA" + "iosfodnn7example", id="aws-lower-case"),
        pytest.param("AKIA" + "IOSFODNN7EXAMPLE1", id="aws-too-long"),
        pytest.param(f"ghp_{chars(20)}", id="github-too-short"),
        pytest.param("sk-this-is-not-an-openai-key-at-all-really", id="sk-dash-words"),
        pytest.param("sk_live_short", id="stripe-too-short"),
        pytest.param("eyJhbGciOi.notajwt", id="eyj-alone"),
        pytest.param(f"eyJ{chars(20)}.eyJ{chars(20)}.{chars(20)}", id="eyj-not-json"),
        pytest.param(
            "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n-----END PUBLIC KEY-----",
            id="public-key",
        ),
        pytest.param("-----BEGIN CERTIFICATE-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA", id="certificate"),
        pytest.param("the file starts with -----BEGIN PRIVATE KEY----- and then base64", id="pem-header-in-prose"),
        pytest.param("password=hunter2", id="short-password"),
        pytest.param("password: userPassword", id="identifier-value"),
        pytest.param("token = self.token;", id="attribute"),
        pytest.param('password = os.environ["DB_PASSWORD"]', id="env-lookup"),
        pytest.param("password = get_password()", id="call"),
        pytest.param("password=${DB_PASSWORD}", id="shell-placeholder"),
        pytest.param("api_key: <your-api-key-here>", id="angle-placeholder"),
        pytest.param("api_key=YOUR_API_KEY_1234", id="your-placeholder"),
        pytest.param("password: ************", id="masked"),
        pytest.param("secret: changeme123", id="changeme"),
        pytest.param("next_page_token: CAUQAA1234abcdEFG", id="page-token"),
        pytest.param("csrf_token=Zx81kLmN0pQr5StU", id="csrf-token"),
        pytest.param("max_tokens: 12345678", id="token-count"),
        pytest.param("Enter your password: required", id="prose"),
        pytest.param("postgres://user:password@localhost/db", id="url-placeholder-password"),
        pytest.param("https://example.com:8443/path@v2", id="url-port-then-at"),
        pytest.param("git@github.com:org/repo.git", id="ssh-remote"),
        pytest.param("monkey: Abc123456789xyz", id="key-suffix-of-a-word"),
    ],
)
def test_look_alikes_are_not_secrets(text: str) -> None:
    assert SECRETS.find(text) == []


def test_spans_do_not_overlap_and_the_specific_rule_wins() -> None:
    text = f"api_key={AWS} and aws={AWS}"
    assert names(text) == ["aws_access_key", "aws_access_key"]
    assert redact(text, SECRETS.find(text)) == "api_key=[REDACTED:aws_access_key] and aws=[REDACTED:aws_access_key]"


def test_redact_replaces_each_span() -> None:
    assert redact("abcdef", [Span("x", 1, 2), Span("y", 4, 6)]) == "a[REDACTED:x]cd[REDACTED:y]"
    assert redact("abc", []) == "abc"


def test_keywords_match_in_any_case() -> None:
    assert names("DB_PASSWORD=Sup3rS3cret!x") == ["credential_assignment"]
    assert names("AUTHORIZATION: BEARER AbCdEf0123456789xyz") == ["authorization"]


def test_non_ascii_text_keeps_offsets() -> None:
    text = f"Grüße İstanbul — password: Sup3rS3cret!x — {AWS}"
    spans = SECRETS.find(text)
    assert [text[s.start : s.end] for s in spans] == ["Sup3rS3cret!x", AWS]


def test_no_pii_unless_configured() -> None:
    assert names("mail alice@example.com, card 4111 1111 1111 1111") == []
    assert not pii_detector((), {})


@pytest.mark.parametrize(
    ("builtin", "text", "found"),
    [
        pytest.param(
            "email",
            "write to alice.smith+tag@mail.example.co.uk today",
            "alice.smith+tag@mail.example.co.uk",
            id="email",
        ),
        pytest.param("credit_card", "card 4111 1111 1111 1111 exp", "4111 1111 1111 1111", id="visa-spaced"),
        pytest.param("credit_card", "card 5555555555554444.", "5555555555554444", id="mastercard"),
        pytest.param("iban", "IBAN DE89 3704 0044 0532 0130 00 ok", "DE89 3704 0044 0532 0130 00", id="iban-spaced"),
        pytest.param("iban", "GB82WEST12345698765432", "GB82WEST12345698765432", id="iban-compact"),
        pytest.param("us_ssn", "ssn 123-45-6789.", "123-45-6789", id="ssn"),
    ],
)
def test_pii_builtins(builtin: str, text: str, found: str) -> None:
    detector = pii_detector([builtin], {})
    assert [text[s.start : s.end] for s in detector.find(text)] == [found]


@pytest.mark.parametrize(
    ("builtin", "text"),
    [
        pytest.param("email", "user@localhost and @mentions and a@b", id="email-no-domain"),
        pytest.param("credit_card", "order 4111 1111 1111 1112", id="card-bad-luhn"),
        pytest.param("credit_card", "ts 1700000000000000", id="timestamp-luhn-or-prefix"),
        pytest.param("credit_card", "version 1.4111111111111111", id="card-after-dot"),
        pytest.param("iban", "DE89 3704 0044 0532 0130 01", id="iban-bad-checksum"),
        pytest.param("iban", "SKU AB12CDEF34567890", id="iban-look-alike"),
        pytest.param("us_ssn", "000-12-3456 666-12-3456 900-12-3456 123-00-4567 123-45-0000", id="ssn-invalid"),
        pytest.param("us_ssn", "2024-01-15 and 555-123-4567", id="dates-and-phones"),
    ],
)
def test_pii_look_alikes(builtin: str, text: str) -> None:
    assert pii_detector([builtin], {}).find(text) == []


def test_operator_patterns() -> None:
    detector = pii_detector(["email"], {"employee_id": r"\bEMP-\d{6}\b"})
    text = "EMP-123456 is bob@corp.example"
    assert [(s.name, text[s.start : s.end]) for s in detector.find(text)] == [
        ("employee_id", "EMP-123456"),
        ("email", "bob@corp.example"),
    ]


@pytest.mark.parametrize(
    ("builtins", "patterns"),
    [
        pytest.param(["phone"], {}, id="unknown-builtin"),
        pytest.param([], {"Bad Name": "x"}, id="bad-name"),
        pytest.param([], {"broken": "(unclosed"}, id="does-not-compile"),
        pytest.param([], {"everything": ".*"}, id="matches-empty"),
    ],
)
def test_bad_pii_configuration_is_refused(builtins: list[str], patterns: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="PII"):
        pii_detector(builtins, patterns)


def test_luhn() -> None:
    assert luhn("4111111111111111")
    assert not luhn("4111111111111112")


def test_builtin_names_are_stable() -> None:
    assert sorted(PII_BUILTINS) == ["credit_card", "email", "iban", "us_ssn"]


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("sk-" * 30_000, id="openai-prefix-run"),
        pytest.param("eyJ" * 30_000, id="jwt-prefix-run"),
        pytest.param("glpat-" * 20_000, id="gitlab-prefix-run"),
        pytest.param("password=" * 10_000, id="keyword-run"),
        pytest.param("authorization=" * 10_000, id="header-run"),
        pytest.param("-----BEGIN PRIVATE KEY-----" + "A" * 100_000, id="endless-pem"),
    ],
)
def test_adversarial_runs_are_scanned_once(text: str) -> None:
    # Each of these made an earlier pattern rescan the rest of the run from every occurrence (quadratic:
    # minutes for a megabyte). Now each finishes at once; the suite's time would show a regression.
    SECRETS.find(text)


def _reference_find(detector: Detector, text: str) -> list[Span]:
    """``Detector.find`` without its shortcuts (no token-run gate, no ``search`` before ``finditer``)."""
    lowered = secrets._lower(text)
    found: list[tuple[int, int, int, str]] = []
    for index, rule in enumerate(detector.rules):
        for match in rule.pattern.finditer(lowered if rule.lowered else text):
            start, end = match.span(rule.group)
            if start < 0 or start == end:
                continue
            if rule.word and match.start() > 0 and text[match.start() - 1] in secrets._WORD:
                continue
            if rule.check is not None and not rule.check(text[start:end]):
                continue
            floor = max(0, start - MAX_EXTEND)
            while rule.extend_left and start > floor and text[start - 1] in rule.extend_left:
                start -= 1
            found.append((start, -(end - start), index, rule.name))
    found.sort()
    spans: list[Span] = []
    reach = -1
    for start, negative_length, _, name in found:
        if start >= reach:
            spans.append(Span(name, start, start - negative_length))
            reach = start - negative_length
    return spans


TOKEN_RULES = [
    pytest.param(rule, id=f"{rule.name}-{index}") for index, rule in enumerate(SECRETS.rules) if rule.token_run
]


@pytest.mark.parametrize("rule", TOKEN_RULES)
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_a_token_rule_matches_only_text_with_a_token_run(rule: Rule, data: st.DataObject) -> None:
    # What lets ``find`` skip these rules on text without such a run: every match holds one.
    match = rule.pattern.search(data.draw(st.from_regex(rule.pattern)))
    assert match is not None
    assert has_token_run(match.group())


RULE_EXAMPLES = st.sampled_from(SECRETS.rules).flatmap(lambda rule: st.from_regex(rule.pattern))
CONTEXT = st.text(alphabet=st.sampled_from([*ALNUM, *" \n\t-_=:\"'./@é\x00"]), max_size=60)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(CONTEXT, RULE_EXAMPLES), max_size=6).map("".join))
def test_find_is_the_scan_of_every_rule(text: str) -> None:
    assert SECRETS.find(text) == _reference_find(SECRETS, text)
    assert has_token_run(text) == (re.search(f"[A-Za-z0-9_-]{{{TOKEN_RUN}}}", text) is not None)
