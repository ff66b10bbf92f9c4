"""The signed login-session cookie."""

from __future__ import annotations

import pytest

from mcp_bastion.asgi.pages.csrf import Signer, b64encode
from mcp_bastion.asgi.pages.session import SESSION_TTL, CookieJar, FederatedIdentity, InvalidSession, Sessions

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


def test_federated_identity_round_trips_under_the_mac(sessions: Sessions) -> None:
    identity = FederatedIdentity("corp", "alice@corp", frozenset({"analyst", "admin"}))
    session = sessions.new("https://idp.example#sub-1", "p1", now=NOW, pending_expires_at=NOW + 60, federated=identity)
    opened = sessions.open(sessions.seal(session), "p1", now=NOW)
    assert opened == session
    assert opened.federated == identity


def test_federated_roles_cannot_be_added_to_a_cookie(sessions: Sessions) -> None:
    identity = FederatedIdentity("corp", "alice", frozenset({"analyst"}))
    sealed = sessions.seal(sessions.new("i#s", "p1", now=NOW, pending_expires_at=NOW + 60, federated=identity))
    _, mac = sealed.split(".")
    evil = b64encode(b'{"u":"i#s","p":"p1","e":9999999999,"n":"x","f":["corp","alice",["admin"]]}')
    with pytest.raises(InvalidSession):
        sessions.open(f"{evil}.{mac}", "p1", now=NOW)


@pytest.mark.parametrize(
    "federated",
    [
        pytest.param('"corp"', id="not-a-list"),
        pytest.param('["corp","alice"]', id="too-short"),
        pytest.param('["corp","alice","admin"]', id="roles-a-string"),
        pytest.param('["corp","alice",[1]]', id="role-not-a-string"),
    ],
)
def test_malformed_federated_identity_is_invalid_even_when_signed(sessions: Sessions, federated: str) -> None:
    body = b64encode(f'{{"u":"i#s","p":"p1","e":{NOW + 60},"n":"x","f":{federated}}}'.encode())
    with pytest.raises(InvalidSession):
        sessions.open(f"{body}.{Signer(b'k' * 32).token(Sessions.PURPOSE, body)}", "p1", now=NOW)


def test_federation_cookie_name() -> None:
    # Path-scoped to a callback, so not __Host- (which requires Path=/); __Secure- still needs HTTPS.
    assert CookieJar(secure=True).federation == "__Secure-bastion-federation"
    assert CookieJar(secure=False).federation == "bastion-federation"
