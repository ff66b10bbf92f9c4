"""Verify JWT access tokens presented to the gateway as a resource server.

RFC 9068 §4 (validating JWT access tokens: ``typ``, ``iss``, signature, ``aud``, ``exp``), RFC 7515 §5.2
(JWS validation), RFC 7519 §4.1 (registered claims), RFC 8707 §2 and RFC 9728 §7.4 (the audience is this
resource's exact identifier), RFC 8725 §3.1-3.2 (algorithm verification and allow-lists).

Invariants:
- the token's ``alg`` header never chooses the kind of key: the key comes from the trusted issuer's set by
  ``kid``, and the algorithm must be on that issuer's allow-list *and* match the key's own type, so HS256
  with a public key as HMAC secret, ``none`` and RSA-for-EC substitutions all fail before any crypto;
- the unverified ``iss`` only selects whose keys to try; every claim is used only after the signature over
  those exact bytes is verified;
- ``jku``, ``jwk``, ``x5u`` and ``x5c`` headers are ignored: keys come from configuration, never the token;
- each failure raises ``Unauthenticated`` with its own stable ``reason`` (listed in ``REASONS``);
- the cache (by SHA-256 of the token) only saves parsing and signature work: expiry, not-before, audience
  and revocation are checked on every call, with the clock read on every call;
- a revocation store that fails makes verification fail (``Unavailable``), never pass.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Protocol, final

import orjson
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey, RSAKey
from joserfc.jws import JWSRegistry

from mcp_bastion.errors import ConfigError, Unauthenticated, Unavailable
from mcp_bastion.oauth.jwks import KeySource, PublicKey

REASONS: Final = frozenset(
    {
        "token_malformed",
        "token_alg_forbidden",
        "token_issuer_unknown",
        "token_key_unknown",
        "token_signature_invalid",
        "token_type_invalid",
        "token_expired",
        "token_not_yet_valid",
        "token_missing_claim",
        "token_audience_mismatch",
        "token_revoked",
    }
)
"""Every ``Unauthenticated.reason`` this module raises."""

SUPPORTED_ALGORITHMS: Final[Mapping[str, tuple[type[PublicKey], str | None]]] = MappingProxyType(
    {
        "ES256": (ECKey, "P-256"),
        "EdDSA": (OKPKey, "Ed25519"),
        "Ed25519": (OKPKey, "Ed25519"),  # RFC 9864's fully specified name for EdDSA over Ed25519
        "RS256": (RSAKey, None),
        "PS256": (RSAKey, None),
    }
)
"""The asymmetric algorithms an issuer may be allowed, with the key type (and curve) each requires."""

DEFAULT_ALGORITHMS: Final = frozenset({"ES256", "EdDSA", "RS256"})
DEFAULT_TYP: Final = frozenset({"at+jwt", "application/at+jwt"})
"""RFC 9068 §2.1. Issuers that still send ``JWT`` need ``accepted_typ`` widened, knowingly."""

MAX_TOKEN_LENGTH: Final = 16 * 1024
"""Longest token we parse; real access tokens are well under 4 KB."""
DEFAULT_CACHE_SIZE: Final = 10_000
DEFAULT_LEEWAY_SECONDS: Final = 30

# Resolved once: joserfc's registry lookup would warn on every EdDSA call (RFC 9864 deprecation) and does
# nothing we need, since our own allow-list and key-type check run first.
ALG_MODELS: Final = {name: JWSRegistry.algorithms[name] for name in SUPPORTED_ALGORITHMS}
SAME_ALG: Final = {"EdDSA": "Ed25519", "Ed25519": "Ed25519"}
B64URL_ALPHABET: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
_REQUIRED_CLAIMS: Final = ("iss", "sub", "aud", "exp")


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """The verified claims of one access token. Shared between requests through the cache: immutable."""

    issuer: str
    subject: str
    audience: tuple[str, ...]
    expires_at: float
    issued_at: float | None
    not_before: float | None
    jwt_id: str | None
    client_id: str | None
    scope: frozenset[str]
    raw: Mapping[str, object]
    """Every claim as sent; nested objects are read-only mappings and arrays are tuples."""


class RevocationCheck(Protocol):
    """Asked on every verification, cached or not. Raising makes the verification fail (503)."""

    async def is_revoked(self, claims: AccessClaims) -> bool: ...


@dataclass(frozen=True, slots=True)
class TrustedIssuer:
    """An issuer whose access tokens we accept, with its keys and what it may use."""

    issuer: str
    keys: KeySource
    algorithms: frozenset[str] = DEFAULT_ALGORITHMS
    accepted_typ: frozenset[str] = DEFAULT_TYP

    def __post_init__(self) -> None:
        if not self.issuer:
            raise ConfigError("trusted issuer: 'issuer' must not be empty")
        unknown = self.algorithms - SUPPORTED_ALGORITHMS.keys()
        if unknown or not self.algorithms:
            raise ConfigError(
                f"trusted issuer {self.issuer!r}: algorithms {sorted(self.algorithms)}; "
                f"allowed are {sorted(SUPPORTED_ALGORITHMS)}"
            )
        if not self.accepted_typ:
            raise ConfigError(f"trusted issuer {self.issuer!r}: accepted_typ must not be empty")


def _normalise_typ(value: str) -> str:
    # RFC 7515 §4.1.9: media types are case-insensitive, and "application/" is implied when no "/" is present.
    value = value.strip().lower()
    return value if "/" in value else "application/" + value


def _fail(reason: str, detail: str, error: str = "invalid_token") -> Unauthenticated:
    return Unauthenticated(detail, reason=reason, error=error)


def _show(value: object) -> str:
    """An attacker-supplied value, quoted and shortened for the audit detail."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _b64decode(segment: str) -> bytes:
    if not segment or not B64URL_ALPHABET.issuperset(segment):
        raise _fail("token_malformed", "segment is not base64url")
    try:
        decoded = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except binascii.Error as exc:
        raise _fail("token_malformed", "segment is not base64url") from exc
    # Only the canonical encoding: otherwise one token has many spellings (and many cache entries).
    if base64.urlsafe_b64encode(decoded).rstrip(b"=").decode() != segment:
        raise _fail("token_malformed", "non-canonical base64url")
    return decoded


def _json_object(data: bytes, part: str) -> dict[str, object]:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise _fail("token_malformed", f"{part} is not JSON") from exc
    if not isinstance(value, dict):
        raise _fail("token_malformed", f"{part} is not a JSON object")
    return value


def _number(payload: Mapping[str, object], name: str) -> float | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail("token_malformed", f"claim {name!r} is not a number")
    try:
        number = float(value)
    except OverflowError as exc:
        raise _fail("token_malformed", f"claim {name!r} is out of range") from exc
    if not math.isfinite(number):
        raise _fail("token_malformed", f"claim {name!r} is not finite")
    return number


def _string(payload: Mapping[str, object], name: str) -> str | None:
    value = payload.get(name)
    if value is None or isinstance(value, str):
        return value
    raise _fail("token_malformed", f"claim {name!r} is not a string")


def _strings(value: object, name: str) -> tuple[str, ...]:
    """A string or a non-empty array of strings, as a tuple (``aud`` and ``scope`` come in both forms)."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise _fail("token_malformed", f"claim {name!r} is neither a string nor an array of strings")


def _freeze(value: object) -> object:
    if isinstance(value, dict):
        return MappingProxyType({key: _freeze(item) for key, item in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(item) for item in value)
    return value


def _claims(payload: dict[str, object]) -> AccessClaims:
    missing = [name for name in _REQUIRED_CLAIMS if payload.get(name) in (None, "")]
    if missing:
        raise _fail("token_missing_claim", f"missing claims {missing}")
    issuer, subject = _string(payload, "iss"), _string(payload, "sub")
    expires_at = _number(payload, "exp")
    # All three were checked just above; the asserts only tell the type checker.
    assert issuer is not None
    assert subject is not None
    assert expires_at is not None
    scope = payload.get("scope")
    return AccessClaims(
        issuer=issuer,
        subject=subject,
        audience=_strings(payload["aud"], "aud"),
        expires_at=expires_at,
        issued_at=_number(payload, "iat"),
        not_before=_number(payload, "nbf"),
        jwt_id=_string(payload, "jti"),
        client_id=_string(payload, "client_id"),
        # RFC 9068 §2.2.3: a space-separated string; some issuers send an array instead.
        scope=frozenset() if scope is None else frozenset(" ".join(_strings(scope, "scope")).split()),
        raw=MappingProxyType({key: _freeze(item) for key, item in payload.items()}),
    )


def _verify_signature(alg: str, key: PublicKey, signing_input: bytes, signature: bytes) -> bool:
    """The only cryptographic step (a module function so tests can count calls)."""
    try:
        return ALG_MODELS[alg].verify(signing_input, signature, key)
    except (JoseError, ValueError, TypeError):
        return False


@dataclass(frozen=True, slots=True)
class _Issuer:
    trusted: TrustedIssuer
    typ: frozenset[str]


@final
class AccessTokenVerifier:
    """Verifies bearer JWTs from a fixed list of trusted issuers, caching the expensive part."""

    def __init__(
        self,
        issuers: Iterable[TrustedIssuer],
        *,
        leeway_seconds: int = DEFAULT_LEEWAY_SECONDS,
        clock: Callable[[], float] = time.time,
        revocation: RevocationCheck | None = None,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        self._issuers: dict[str, _Issuer] = {}
        for trusted in issuers:
            if trusted.issuer in self._issuers:
                raise ConfigError(f"trusted issuer {trusted.issuer!r} is listed twice")
            typ = frozenset(_normalise_typ(value) for value in trusted.accepted_typ)
            self._issuers[trusted.issuer] = _Issuer(trusted, typ)
        if not 0 <= leeway_seconds <= 300:
            raise ConfigError(f"leeway_seconds {leeway_seconds}: must be between 0 and 300")
        if cache_size < 0:
            raise ConfigError(f"cache_size {cache_size}: must not be negative")
        self._leeway = float(leeway_seconds)
        self._clock = clock
        self._revocation = revocation
        self._cache_size = cache_size
        self._cache: OrderedDict[bytes, AccessClaims] = OrderedDict()

    async def verify(self, token: str, *, audience: str) -> AccessClaims:
        """Return the claims of ``token`` if it is valid *now* for ``audience``; raise otherwise.

        Raises ``Unauthenticated`` (reason in ``REASONS``), or ``Unavailable`` when the revocation store
        or a remote key set cannot be read.
        """
        if not audience:
            raise ValueError("audience must be this resource's identifier, not empty")
        if len(token) > MAX_TOKEN_LENGTH or not token.isascii():
            raise _fail("token_malformed", f"token of {len(token)} characters or not ASCII")
        digest = hashlib.sha256(token.encode("ascii")).digest()
        claims = self._cache.get(digest)
        if claims is None:
            claims = await self._verify_uncached(token)
            self._check_times(claims)
        else:
            self._cache.move_to_end(digest)
            try:
                self._check_times(claims)
            except Unauthenticated:
                del self._cache[digest]
                raise
        # RFC 8707 / RFC 9728 §7.4: exact string comparison, no normalisation of either side.
        if audience not in claims.audience:
            raise _fail("token_audience_mismatch", f"aud {_show(claims.audience)} lacks {audience!r}")
        await self._check_revocation(claims)
        if self._cache_size and digest not in self._cache:
            self._cache[digest] = claims
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return claims

    def _check_times(self, claims: AccessClaims) -> None:
        now = self._clock()
        if now >= claims.expires_at + self._leeway:
            raise _fail("token_expired", f"expired at {claims.expires_at}, now {now}")
        if claims.not_before is not None and now + self._leeway < claims.not_before:
            raise _fail("token_not_yet_valid", f"nbf {claims.not_before}, now {now}")
        if claims.issued_at is not None and now + self._leeway < claims.issued_at:
            raise _fail("token_not_yet_valid", f"iat {claims.issued_at} in the future, now {now}")

    async def _check_revocation(self, claims: AccessClaims) -> None:
        if self._revocation is None:
            return
        try:
            revoked = await self._revocation.is_revoked(claims)
        except Exception as exc:
            # Any failure of the store must deny: we cannot tell a revoked token from a good one.
            raise Unavailable(f"revocation check failed: {type(exc).__name__}: {exc}") from exc
        if revoked is not False:  # anything but a clear "no" (e.g. None from a buggy store) denies
            raise _fail("token_revoked", f"token jti={claims.jwt_id!r} sub={claims.subject!r} revoked")

    async def _verify_uncached(self, token: str) -> AccessClaims:
        parts = token.split(".")
        if len(parts) != 3:
            raise _fail("token_malformed", f"{len(parts)} segments, a compact JWS has 3")
        header = _json_object(_b64decode(parts[0]), "header")
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise _fail("token_malformed", "header has no string 'alg'")
        if alg not in SUPPORTED_ALGORITHMS:
            # Before anything else is decoded, so an unsecured JWT (empty signature) is named for what it is.
            raise _fail("token_alg_forbidden", f"alg {_show(alg)} is never accepted")
        payload = _json_object(_b64decode(parts[1]), "payload")
        signature = _b64decode(parts[2])
        if "crit" in header or "b64" in header:
            # RFC 7515 §4.1.11: we understand no extension, so a critical one must be refused.
            raise _fail("token_malformed", "header uses 'crit' or 'b64'")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise _fail("token_malformed", "'kid' is not a string")

        claimed_issuer = payload.get("iss")
        if claimed_issuer is None:
            raise _fail("token_missing_claim", "missing claims ['iss']")
        issuer = self._issuers.get(claimed_issuer) if isinstance(claimed_issuer, str) else None
        if issuer is None:
            raise _fail("token_issuer_unknown", f"iss {_show(claimed_issuer)} is not trusted")
        if alg not in issuer.trusted.algorithms:
            raise _fail("token_alg_forbidden", f"alg {alg} not allowed for {issuer.trusted.issuer!r}")

        key = await issuer.trusted.keys.key_for(kid)
        if key is None:
            raise _fail("token_key_unknown", f"no key {_show(kid)} for {issuer.trusted.issuer!r}")
        key_type, curve = SUPPORTED_ALGORITHMS[alg]
        if not isinstance(key, key_type) or (
            curve is not None and isinstance(key, ECKey | OKPKey) and key.curve_name != curve
        ):
            raise _fail("token_alg_forbidden", f"alg {alg} does not fit key {_show(kid)}")
        declared = key.alg
        if declared is not None and SAME_ALG.get(declared, declared) != SAME_ALG.get(alg, alg):
            raise _fail("token_alg_forbidden", f"key {_show(kid)} is for {declared}, token uses {alg}")

        signing_input = token[: len(parts[0]) + 1 + len(parts[1])].encode("ascii")
        if not _verify_signature(alg, key, signing_input, signature):
            raise _fail("token_signature_invalid", f"bad {alg} signature, key {_show(kid)}")

        # From here on the header and payload are authentic.
        typ = header.get("typ")
        if not isinstance(typ, str) or _normalise_typ(typ) not in issuer.typ:
            raise _fail("token_type_invalid", f"typ {_show(typ)}")
        claims = _claims(payload)
        if claims.issuer != issuer.trusted.issuer:
            raise _fail("token_issuer_unknown", "iss changed between selection and verification")
        return claims
