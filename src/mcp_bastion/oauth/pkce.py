"""Proof Key for Code Exchange, S256 only.

RFC 7636 §4.1 (``code_verifier`` = 43-128 unreserved characters), §4.2 (S256: ``BASE64URL(SHA256(verifier))``),
§4.3 and §4.6 (the server stores the challenge and compares at the token endpoint). OAuth 2.1 §4.1.1 and
RFC 9700 §2.1.1: ``plain`` gives no protection against a leaked authorization request, so it is refused, and
so is a missing challenge (we never fall back to "no PKCE").

Invariants:
- the only method is ``S256``; anything else, including absent, is ``invalid_request``;
- the verifier is compared in constant time on its S256 digest (``hmac.compare_digest``), never with ``==``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from typing import Final, Literal

from mcp_bastion.oauth.refusal import Refusal

METHOD: Final[Literal["S256"]] = "S256"
METHODS_SUPPORTED: Final = (METHOD,)

_UNRESERVED_43_128: Final = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
"""RFC 7636 §4.1: ``code-verifier = 43*128unreserved``; the challenge uses the same alphabet."""


def s256(verifier: str) -> str:
    """``BASE64URL-ENCODE(SHA256(ASCII(code_verifier)))`` without padding (RFC 7636 §4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def check_challenge(challenge: str | None, method: str | None) -> str:
    """Validate the /authorize PKCE parameters; return the challenge to store. Raises ``Refusal``."""
    if not challenge:
        raise Refusal("invalid_request", "pkce_challenge_missing", "code_challenge is required")
    if method != METHOD:
        # Absent means "plain" in RFC 7636 §4.3, which we refuse like an explicit "plain".
        raise Refusal("invalid_request", "pkce_method_unsupported", "code_challenge_method must be S256")
    if not _UNRESERVED_43_128.fullmatch(challenge):
        raise Refusal("invalid_request", "pkce_challenge_malformed", "code_challenge is malformed")
    return challenge


def verify(verifier: str | None, challenge: str) -> None:
    """Check the token request's ``code_verifier`` against the stored challenge. Raises ``Refusal``."""
    if not verifier:
        raise Refusal("invalid_grant", "pkce_verifier_missing", "code_verifier is required")
    if not _UNRESERVED_43_128.fullmatch(verifier):
        raise Refusal("invalid_grant", "pkce_verifier_malformed", "code_verifier is malformed")
    if not hmac.compare_digest(s256(verifier).encode("ascii"), challenge.encode("ascii")):
        raise Refusal("invalid_grant", "pkce_verifier_mismatch", "code_verifier does not match")
