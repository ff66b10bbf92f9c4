"""The federated login's state cookie: encrypted, signed, bound to one IdP and one browser."""

from __future__ import annotations

import pytest

from mcp_bastion.asgi.pages.csrf import Signer, b64decode, b64encode
from mcp_bastion.asgi.pages.statecookie import MAX_COOKIE_LENGTH, InvalidState, StateCookies
from mcp_bastion.oauth.federation import FederationState

NONCE = "N" * 43
STATE = FederationState(
    issuer="https://idp.example",
    state="s" * 43,
    nonce="n" * 43,
    code_verifier="the-pkce-verifier-" + "v" * 30,
    pending_id="pending-1",
    expires_at=1_800_000_600,
)


@pytest.fixture
def cookies() -> StateCookies:
    return StateCookies(Signer(b"k" * 32))


def test_round_trip_and_secrecy(cookies: StateCookies) -> None:
    sealed = cookies.seal("corp", NONCE, STATE)
    assert cookies.open("corp", NONCE, sealed) == STATE
    assert len(sealed) < MAX_COOKIE_LENGTH // 3
    body = b64decode(sealed.split(".")[0])
    for secret in (STATE.code_verifier, STATE.nonce, STATE.state, STATE.pending_id):
        assert secret.encode() not in body
    assert cookies.seal("corp", NONCE, STATE) != sealed  # a fresh IV every time


def test_another_key_cannot_open_it(cookies: StateCookies) -> None:
    with pytest.raises(InvalidState):
        StateCookies(Signer(b"x" * 32)).open("corp", NONCE, cookies.seal("corp", NONCE, STATE))


@pytest.mark.parametrize(
    ("provider", "browser"),
    [pytest.param("partner", NONCE, id="other-idp"), pytest.param("corp", "M" * 43, id="other-browser")],
)
def test_bound_to_its_idp_and_browser(cookies: StateCookies, provider: str, browser: str) -> None:
    with pytest.raises(InvalidState):
        cookies.open(provider, browser, cookies.seal("corp", NONCE, STATE))


def _resigned_changed_ciphertext(cookies: StateCookies) -> str:
    """A valid MAC over a ciphertext with one bit flipped: only GCM's tag can catch it."""
    body = bytearray(b64decode(cookies.seal("corp", NONCE, STATE).split(".")[0]))
    body[-1] ^= 1
    changed = b64encode(bytes(body))
    return f"{changed}.{Signer(b'k' * 32).token('federation-state', 'corp', NONCE, changed)}"


def _resigned_short(cookies: StateCookies) -> str:
    body = b64encode(b"short")
    return f"{body}.{Signer(b'k' * 32).token('federation-state', 'corp', NONCE, body)}"


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda c: "", id="empty"),
        pytest.param(lambda c: "no-dot", id="no-dot"),
        pytest.param(lambda c: "a.b.c", id="two-dots"),
        pytest.param(lambda c: c.seal("corp", NONCE, STATE) + "x", id="mac-changed"),
        pytest.param(lambda c: "A" * (MAX_COOKIE_LENGTH + 1), id="oversized"),
        pytest.param(_resigned_changed_ciphertext, id="ciphertext-changed-under-a-valid-mac"),
        pytest.param(_resigned_short, id="too-short-under-a-valid-mac"),
    ],
)
def test_anything_else_is_invalid(cookies: StateCookies, make: object) -> None:
    assert callable(make)
    with pytest.raises(InvalidState):
        cookies.open("corp", NONCE, make(cookies))
