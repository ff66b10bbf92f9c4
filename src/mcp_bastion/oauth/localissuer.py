"""A small local token issuer: one ES256 key in a 0600 file, minting RFC 9068 access tokens.

The gateway's own issuer when the authorization server is off (``oauth.enabled = false``, the key then
never rotates), and the signer of the authorization server's unit tests; with the authorization server on,
``signingkeys.SigningKeyRing`` signs instead. RFC 9068 §2.1 (header: ``typ``
``at+jwt``), §2.2 (claims: iss, exp, aud, sub, client_id, iat, jti, plus scope §2.2.3), RFC 7638 (the
``kid`` is the key's thumbprint), RFC 7518 §3.4 (ES256).

Invariants:
- the private key file is created with mode 0600 in one step (never briefly wider) and appears under its
  final name complete or not at all; two processes racing to create it end up sharing one key;
- a key file readable by group or others, or not a regular file, is refused (``ConfigError``);
- the private key never leaves this object: ``public_keys()`` returns public material only.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final, final

import orjson
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from mcp_bastion.errors import ConfigError
from mcp_bastion.oauth.jwks import KeySet
from mcp_bastion.privatefile import read_private, write_atomic

ALGORITHM: Final = "ES256"
KEY_FILENAME: Final = "issuer-es256.jwk"
"""The key file's name inside ``server.state_dir``."""
MAX_KEY_FILE_BYTES: Final = 16 * 1024
_SCOPE_TOKEN: Final = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
"""RFC 6749 §3.3 scope-token."""
_RESERVED_CLAIMS: Final = frozenset({"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id", "scope"})


def _read_key_file(path: Path) -> ECKey:
    data = read_private(path, "issuer key file", max_bytes=MAX_KEY_FILE_BYTES)
    try:
        key = ECKey.import_key(orjson.loads(data))
    except (orjson.JSONDecodeError, JoseError, ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"issuer key file {path} is not an EC JWK: {exc}") from exc
    if not key.is_private or key.curve_name != "P-256":
        raise ConfigError(f"issuer key file {path} must hold a private P-256 key")
    return key


def _create_key_file(path: Path) -> None:
    """Write a new key to ``path`` unless the file appears meanwhile (then the existing one wins)."""
    key = ECKey.generate_key("P-256", private=True)
    key.ensure_kid()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(path, orjson.dumps(key.as_dict(private=True)), keep_existing=True)


@final
class LocalIssuer:
    """Signs access tokens with one ES256 key kept in a private file."""

    __slots__ = ("_key", "_public", "issuer")

    def __init__(self, key: ECKey, issuer: str) -> None:
        if not issuer:
            raise ConfigError("local issuer: 'issuer' must not be empty")
        key.ensure_kid()
        self._key: Final = key
        self.issuer: Final = issuer
        self._public: Final = KeySet([ECKey.import_key(key.as_dict(private=False))])

    @classmethod
    def load_or_create(cls, path: Path, issuer: str) -> LocalIssuer:
        """Load the key at ``path``, creating it (mode 0600) if there is none yet."""
        if not path.exists() and not path.is_symlink():
            _create_key_file(path)
        return cls(_read_key_file(path), issuer)

    @property
    def kid(self) -> str:
        kid = self._key.kid
        assert kid is not None  # ensure_kid() ran in __init__
        return kid

    def public_keys(self) -> KeySet:
        """The public half, for a ``TrustedIssuer`` or a ``jwks_uri``."""
        return self._public

    def mint(
        self,
        subject: str,
        audience: str,
        *,
        scope: Iterable[str] = (),
        lifetime: int = 300,
        client_id: str = "demo",
        now: float | None = None,
        extra: Mapping[str, object] | None = None,
    ) -> str:
        """An RFC 9068 access token for ``subject``, valid for ``audience`` during ``lifetime`` seconds.

        ``extra`` adds claims; it cannot replace the registered ones above.
        """
        if not subject or not audience or not client_id:
            raise ValueError("subject, audience and client_id must not be empty")
        if lifetime <= 0:
            raise ValueError(f"lifetime {lifetime}: must be positive")
        scopes = list(scope)
        bad = [item for item in scopes if not _SCOPE_TOKEN.fullmatch(item)]
        if bad:
            raise ValueError(f"not scope tokens (RFC 6749 §3.3): {bad!r}")
        issued_at = int(time.time() if now is None else now)
        claims: dict[str, object] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": audience,
            "exp": issued_at + lifetime,
            "iat": issued_at,
            "nbf": issued_at,
            "jti": secrets.token_urlsafe(16),
            "client_id": client_id,
        }
        if scopes:
            claims["scope"] = " ".join(dict.fromkeys(scopes))  # de-duplicated, order kept
        if extra:
            clash = _RESERVED_CLAIMS.intersection(extra)
            if clash:
                raise ValueError(f"extra claims may not replace {sorted(clash)}")
            claims.update(extra)
        header = {"alg": ALGORITHM, "typ": "at+jwt", "kid": self.kid}
        return jws.serialize_compact(header, orjson.dumps(claims), self._key, algorithms=[ALGORITHM])
