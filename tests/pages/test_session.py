"""The signed login-session cookie."""

from __future__ import annotations

import pytest

from mcp_bastion.asgi.pages.csrf import Signer, b64encode
from mcp_bastion.asgi.pages.session import SESSION_TTL, CookieJar, InvalidSession, Sessions

NOW = 1_800_000_000.0


@pytest.fixture
def sessions() -> Sessions:
    return Sessions(Signer(b"k" * 32), CookieJar(secure=True))


def test_round_trip(sessions: Sessions) -> None:
    session = sessions.new("u1", "p1", now=NOW, pending_expires_at=NOW + 60)
    assert session.expires_at == NOW + 60
    assert sessions.open(sessions.seal(session), "p1", now=NOW + 59) == session


def test_session_never_outlives_its_cap(sessions: Sessions) -> None:
    assert sessions.new("u1", "p1", now=NOW, pending_expires_at=NOW + 10 * SESSION_TTL).expires_at == NOW + SESSION_TTL


def test_each_login_gets_its_own_nonce(sessions: Sessions) -> None:
    first = sessions.new("u1", "p1", now=NOW, pending_expires_at=NOW + 60)
    second = sessions.new("u1", "p1", now=NOW, pending_expires_at=NOW + 60)
    assert first.nonce != second.nonce


def _tampered(sessions: Sessions) -> str:
    _, mac = sessions.seal(sessions.new("u1", "p1", now=NOW, pending_expires_at=NOW + 60)).split(".")
    evil = b64encode(b'{"u":"admin","p":"p1","e":9999999999,"n":"x"}')
    return f"{evil}.{mac}"


def _signed_garbage(sessions: Sessions) -> str:
    body = b64encode(b'{"u":"u1"}')
    return f"{body}.{Signer(b'k' * 32).token(Sessions.PURPOSE, body)}"


@pytest.mark.parametrize(
    "cookie",
    [
        pytest.param(None, id="missing"),
        pytest.param("", id="empty"),
        pytest.param("no-dot", id="no-dot"),
        pytest.param("a.b.c", id="two-dots"),
        pytest.param(_tampered, id="payload-changed"),
        pytest.param(_signed_garbage, id="signed-but-incomplete"),
    ],
)
def test_bad_cookies_are_invalid(sessions: Sessions, cookie: object) -> None:
    value = cookie(sessions) if callable(cookie) else cookie
    assert value is None or isinstance(value, str)
    with pytest.raises(InvalidSession):
        sessions.open(value, "p1", now=NOW)


def test_expired_or_other_pending_is_invalid(sessions: Sessions) -> None:
    sealed = sessions.seal(sessions.new("u1", "p1", now=NOW, pending_expires_at=NOW + 60))
    with pytest.raises(InvalidSession):
        sessions.open(sealed, "p1", now=NOW + 60)
    with pytest.raises(InvalidSession):
        sessions.open(sealed, "p2", now=NOW)


def test_cookie_names(sessions: Sessions) -> None:
    assert sessions.jar.browser == "__Host-bastion-browser"
    assert sessions.cookie_name("p1").startswith("__Host-bastion-login-")
    assert sessions.cookie_name("p1") != sessions.cookie_name("p2")
    assert CookieJar(secure=False).browser == "bastion-browser"
