"""Keyed MACs for the pages: CSRF tokens and the browser nonce they are bound to.

CSRF defence is a *signed* double submit (OWASP "signed double-submit cookie"):

- every browser that opens ``/authorize`` gets a random nonce in an HttpOnly cookie (``__Host-`` prefixed
  when cookies are secure, so neither a sibling subdomain nor plain HTTP can plant one);
- each form carries ``token = HMAC-SHA256(key, "form name", nonce, pending id)``. A forged cross-site
  POST carries the victim's cookie but cannot know the nonce (HttpOnly, never in a page) nor compute a token
  for it without the server key; a token lifted from one page is useless with another browser's nonce or
  for another pending authorization;
- after login the consent form's token is bound to the signed login session instead (``session.py``).

Tokens are compared with ``hmac.compare_digest``. Fields are length-prefixed before MACing so that no two
different field tuples produce the same message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

KEY_BYTES = 32
"""Size of the random per-process key, and the minimum accepted for a configured one."""

NONCE_BYTES = 32


def b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64decode(text: str) -> bytes:
    """Strict base64url without padding; ``ValueError`` for anything else."""
    if not text.isascii() or "=" in text:
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as exc:
        raise ValueError("not base64url") from exc


class Signer:
    """HMAC-SHA256 under one key, with a purpose label for domain separation."""

    def __init__(self, key: bytes | None = None) -> None:
        if key is None:
            # A fresh key per process: every session and form dies with a restart, which is acceptable for
            # a flow that lives a few minutes; several replicas need one shared key passed in.
            key = secrets.token_bytes(KEY_BYTES)
        if len(key) < KEY_BYTES:
            raise ValueError(f"the page signing key must be at least {KEY_BYTES} bytes")
        self._key = key

    def mac(self, purpose: str, *fields: str) -> bytes:
        message = bytearray()
        for part in (purpose, *fields):
            encoded = part.encode("utf-8", "surrogatepass")
            message += len(encoded).to_bytes(4, "big") + encoded
        return hmac.new(self._key, bytes(message), hashlib.sha256).digest()

    def token(self, purpose: str, *fields: str) -> str:
        return b64encode(self.mac(purpose, *fields))

    def verify(self, token: str, purpose: str, *fields: str) -> bool:
        """Constant-time check of ``token`` against the MAC of ``fields``."""
        expected = self.token(purpose, *fields)
        return hmac.compare_digest(token.encode("utf-8", "surrogatepass"), expected.encode("ascii"))


def new_nonce() -> str:
    return b64encode(secrets.token_bytes(NONCE_BYTES))


def is_nonce(text: str) -> bool:
    """A well-formed browser nonce (as we mint them); anything else in the cookie is replaced."""
    try:
        return len(b64decode(text)) == NONCE_BYTES
    except ValueError:
        return False


class CSRF:
    """Form tokens bound to a browser nonce (login) or a login session (consent), and a pending id."""

    LOGIN = "csrf-login"
    CONSENT = "csrf-consent"

    def __init__(self, signer: Signer) -> None:
        self._signer = signer

    def login_token(self, nonce: str, pending_id: str) -> str:
        return self._signer.token(self.LOGIN, nonce, pending_id)

    def check_login(self, token: str, nonce: str, pending_id: str) -> bool:
        return self._signer.verify(token, self.LOGIN, nonce, pending_id)

    def consent_token(self, session_nonce: str, pending_id: str) -> str:
        return self._signer.token(self.CONSENT, session_nonce, pending_id)

    def check_consent(self, token: str, session_nonce: str, pending_id: str) -> bool:
        return self._signer.verify(token, self.CONSENT, session_nonce, pending_id)
