"""CSRF tokens: bound to the browser nonce, the pending id and the form; keys must be long enough."""

from __future__ import annotations

import pytest

from mcp_bastion.asgi.pages.csrf import CSRF, Signer, b64decode, is_nonce, new_nonce

KEY = b"k" * 32


def test_login_token_checks_only_for_its_own_nonce_and_pending() -> None:
    csrf = CSRF(Signer(KEY))
    nonce, other = new_nonce(), new_nonce()
    token = csrf.login_token(nonce, "p1")
    assert csrf.check_login(token, nonce, "p1")
    assert not csrf.check_login(token, other, "p1")
    assert not csrf.check_login(token, nonce, "p2")
    assert not csrf.check_login("", nonce, "p1")
    assert not csrf.check_login(token + "A", nonce, "p1")


def test_login_and_consent_tokens_are_not_interchangeable() -> None:
    csrf = CSRF(Signer(KEY))
    nonce = new_nonce()
    assert not csrf.check_consent(csrf.login_token(nonce, "p1"), nonce, "p1")
    assert not csrf.check_login(csrf.consent_token(nonce, "p1"), nonce, "p1")


def test_tokens_from_another_key_fail() -> None:
    nonce = new_nonce()
    token = CSRF(Signer(b"a" * 32)).login_token(nonce, "p1")
    assert not CSRF(Signer(b"b" * 32)).check_login(token, nonce, "p1")
    assert not CSRF(Signer()).check_login(token, nonce, "p1")  # a fresh random key


def test_fields_are_length_prefixed() -> None:
    signer = Signer(KEY)
    assert signer.mac("p", "ab", "c") != signer.mac("p", "a", "bc")
    assert signer.mac("p", "a\x00b") != signer.mac("p", "a", "b")


def test_non_ascii_token_is_refused_not_an_exception() -> None:
    assert not Signer(KEY).verify("\u00e9\udcff", "p", "x")


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Signer(b"short")


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        pytest.param(new_nonce(), True, id="minted"),
        pytest.param("", False, id="empty"),
        pytest.param("A" * 42, False, id="short"),
        pytest.param("A" * 43 + "=", False, id="padded"),
        pytest.param("!" * 43, False, id="not-base64"),
        pytest.param("\u00e9" * 43, False, id="non-ascii"),
    ],
)
def test_is_nonce(text: str, ok: bool) -> None:
    assert is_nonce(text) is ok


def test_b64decode_is_strict() -> None:
    with pytest.raises(ValueError, match="base64url"):
        b64decode("a=")
