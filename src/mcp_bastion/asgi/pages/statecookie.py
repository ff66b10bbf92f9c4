"""The federated login's state cookie: the ``FederationState`` a browser carries from the "Sign in with …"
POST to the IdP's redirect back to our callback, encrypted and signed with the pages' key.

Value: ``base64url(iv ‖ AES-256-GCM(k, iv, state, aad)) "." base64url(HMAC-SHA256(key, purpose, provider,
browser nonce, body))``

- Encrypted, because the state holds the PKCE code verifier and the ID token ``nonce``: whoever reads the
  cookie (a log of request headers, a browser extension) and catches the code could redeem it.
- Signed like every other cookie of the pages, and the MAC is checked first, in constant time: nothing an
  attacker wrote is decrypted or parsed. (GCM's tag alone would also detect forgery; the MAC keeps one rule
  for all the pages' cookies and one key that replicas share.)
- Both bind the provider's name (MAC field and GCM associated data): a state made for one IdP is refused at
  another IdP's callback before ``FederatedLogin.finish`` even compares issuers.
- Both bind the browser nonce (the ``__Host-`` cookie the CSRF tokens hang on). This cookie is scoped to
  one callback path, so it cannot be ``__Host-`` itself, and a sibling subdomain could plant one: say, a
  genuine state the attacker got from their own login, to log the victim in as the attacker. Planted into
  another browser it fails, because that browser's nonce is not the one it was sealed with.
- ``k`` is ``HMAC-SHA256(page key, "federation-state-key")`` (``Signer.mac``): a PRF of the page key under a
  label no other MAC uses (HKDF-Expand's construction), so no key serves two algorithms.

Expiry is inside the state (``FederationState.expires_at``, checked by ``finish``); the cookie's Max-Age only
makes the browser drop it at the same time.
"""

from __future__ import annotations

import secrets
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mcp_bastion.asgi.pages.csrf import Signer, b64decode, b64encode
from mcp_bastion.oauth.federation import FederationState
from mcp_bastion.oauth.service import OAuthError

MAX_COOKIE_LENGTH: Final = 2048
"""A sealed state is ~400 characters; anything much longer is not ours and is refused before any work."""
_IV_BYTES: Final = 12
_PURPOSE: Final = "federation-state"
_KEY_LABEL: Final = "federation-state-key"


class InvalidState(Exception):
    """The cookie is malformed, forged, or made for another IdP (deliberately not saying which)."""


class StateCookies:
    """Seals and opens ``FederationState`` cookies under the pages' key."""

    def __init__(self, signer: Signer) -> None:
        self._signer = signer
        # Built once: the cipher object holds the expanded key and is safe to reuse.
        self._aead = AESGCM(signer.mac(_KEY_LABEL))

    @staticmethod
    def _aad(provider: str, browser: str) -> bytes:
        # Neither a provider name (a slug) nor a nonce (base64url) contains NUL: the join is unambiguous.
        return f"{_PURPOSE}\x00{provider}\x00{browser}".encode()

    def seal(self, provider: str, browser: str, state: FederationState) -> str:
        """``state`` for ``provider``'s callback, usable only by the browser whose nonce is ``browser``."""
        # A random 96-bit IV per cookie: a few logins a second stay far below GCM's random-IV bound.
        iv = secrets.token_bytes(_IV_BYTES)
        body = b64encode(iv + self._aead.encrypt(iv, state.dump().encode(), self._aad(provider, browser)))
        return f"{body}.{self._signer.token(_PURPOSE, provider, browser, body)}"

    def open(self, provider: str, browser: str, cookie: str) -> FederationState:
        """The state sealed in ``cookie`` for ``provider`` and this browser; ``InvalidState`` for anything else."""
        if len(cookie) > MAX_COOKIE_LENGTH or cookie.count(".") != 1:
            raise InvalidState
        body, mac = cookie.split(".")
        if not self._signer.verify(mac, _PURPOSE, provider, browser, body):
            raise InvalidState
        try:
            sealed = b64decode(body)
            plain = self._aead.decrypt(sealed[:_IV_BYTES], sealed[_IV_BYTES:], self._aad(provider, browser))
            return FederationState.load(plain)
        except (ValueError, InvalidTag, OAuthError) as exc:
            # Only reachable with a valid MAC: a key shared with an older, incompatible version.
            raise InvalidState from exc
