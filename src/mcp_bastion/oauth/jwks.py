"""The public keys we trust to sign access tokens: JWK Sets from a file or fetched from an issuer.

RFC 7517 §4 (JWK parameters) and §5 (JWK Set); RFC 7518 §6 and RFC 8037 §2 (the key types we accept);
RFC 8414 §2 / OpenID Connect Discovery ``jwks_uri`` (where remote sets come from).

Invariants:
- a ``KeySet`` holds public signature keys only, of three kinds: EC P-256, OKP Ed25519, RSA >= 2048 bits;
- private key material anywhere in a set refuses the whole set: a JWKS that leaks a private key (or
  publishes a shared ``oct`` secret) comes from a broken issuer and must not be trusted for anything;
- ``kid`` values are unique within a set, so a lookup never has to guess between two keys;
- a ``KeySet`` never changes after construction; ``RemoteKeySet`` swaps whole sets, never edits one;
- ``RemoteKeySet`` contacts the issuer at most once per ``min_refetch_interval`` whatever tokens arrive
  (an attacker inventing ``kid`` values cannot make us hammer the IdP), and only over https unless the URL
  is a loopback IP literal and ``allow_insecure_http`` was set.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import logging
import ssl
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol, TypeAlias, final
from urllib.parse import urlsplit

import aiohttp
import orjson
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, JWKRegistry, OKPKey, RSAKey
from joserfc.jwk import KeySet as JoseKeySet

from mcp_bastion.errors import ConfigError, Unavailable

logger = logging.getLogger(__name__)

PublicKey: TypeAlias = ECKey | OKPKey | RSAKey
"""A public signature key of one of the accepted kinds."""

MAX_JWKS_BYTES: Final = 256 * 1024
"""Largest JWK Set document we read, from a file or over the network."""
MAX_KEYS: Final = 100
"""Most keys in one set; real issuers publish a handful, and every key costs an import."""
MIN_RSA_BITS: Final = 2048
FETCH_TIMEOUT_SECONDS: Final = 5.0
"""Whole-request budget for one JWKS fetch (connect, TLS, headers and body)."""
MIN_REFETCH_INTERVAL_SECONDS: Final = 60.0
"""At most one fetch per minute, whatever triggered it (unknown kid, failure, periodic refresh)."""
REFRESH_INTERVAL_SECONDS: Final = 15 * 60.0
"""Periodic refresh, so a key the issuer withdrew stops being trusted within this time."""
MAX_STALE_SECONDS: Final = 24 * 3600.0
"""When the issuer has been unreachable this long, the old set is no longer used: fail closed."""

_PRIVATE_PARAMS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
"""RFC 7518 §6.2.2, §6.3.2, §6.4 and RFC 8037 §2: members that only private or symmetric keys have."""


class _Unsupported(Exception):
    """A well-formed key we do not accept (wrong type, curve, size or use)."""


class _FetchFailed(Exception):
    """The issuer's answer is not a JWK Set we can read (status, size)."""


class KeySource(Protocol):
    """Anything the verifier can ask for a key by ``kid``: ``KeySet`` and ``RemoteKeySet``."""

    async def key_for(self, kid: str | None) -> PublicKey | None:
        """The key with this ``kid`` (or the only key, when ``kid`` is None), or None."""
        ...


def _accept(key: object) -> PublicKey:
    """Return ``key`` if it is a public signature key of an accepted kind; raise ``_Unsupported`` if not."""
    if isinstance(key, ECKey):
        if key.curve_name != "P-256":
            raise _Unsupported(f"EC curve {key.curve_name} is not accepted (only P-256)")
    elif isinstance(key, OKPKey):
        if key.curve_name != "Ed25519":
            raise _Unsupported(f"OKP curve {key.curve_name} is not accepted (only Ed25519)")
    elif isinstance(key, RSAKey):
        if key.public_key.key_size < MIN_RSA_BITS:
            raise _Unsupported(f"RSA key of {key.public_key.key_size} bits (at least {MIN_RSA_BITS})")
    else:
        raise _Unsupported(f"key type {type(key).__name__} is not accepted")
    if key.is_private:
        raise ConfigError("private key material in a set of trusted public keys")
    use = key.get("use")
    if use is not None and use != "sig":
        raise _Unsupported(f"key for use {use!r}, not 'sig'")
    ops = key.get("key_ops")
    if ops is not None and "verify" not in ops:
        raise _Unsupported("key_ops without 'verify'")
    return key


def _rsa_modulus_bits(n: object) -> int:
    if not isinstance(n, str):
        raise ConfigError("RSA JWK without a string 'n'")
    try:
        modulus = base64.urlsafe_b64decode(n + "=" * (-len(n) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ConfigError("RSA JWK 'n' is not base64url") from exc
    return int.from_bytes(modulus, "big").bit_length()


def _import(jwk: object) -> PublicKey:
    if not isinstance(jwk, dict):
        raise ConfigError("a JWK must be a JSON object")
    leaked = _PRIVATE_PARAMS.intersection(jwk)
    if leaked:
        raise ConfigError(f"private key material in a JWK Set (members {sorted(leaked)})")
    if jwk.get("kty") not in ("EC", "OKP", "RSA"):
        raise _Unsupported(f"kty {jwk.get('kty')!r} is not accepted")
    if jwk.get("kty") == "RSA":
        # Sized before import: joserfc warns (SecurityWarning) while importing a short RSA key.
        bits = _rsa_modulus_bits(jwk.get("n"))
        if bits < MIN_RSA_BITS:
            raise _Unsupported(f"RSA key of {bits} bits (at least {MIN_RSA_BITS})")
    try:
        key = JWKRegistry.import_key(jwk)
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"invalid JWK (kid {jwk.get('kid')!r}): {exc}") from exc
    return _accept(key)


@final
class KeySet:
    """An immutable set of trusted public JWKs, looked up by ``kid``."""

    __slots__ = ("_by_kid", "_keys")

    def __init__(self, keys: Iterable[PublicKey]) -> None:
        by_kid: dict[str, PublicKey] = {}
        for key in keys:
            try:
                _accept(key)
            except _Unsupported as exc:
                raise ConfigError(str(exc)) from exc
            key.ensure_kid()  # RFC 7638 thumbprint when the JWK has no kid
            kid = key.kid
            assert kid is not None
            if kid in by_kid:
                raise ConfigError(f"duplicate kid {kid!r} in a JWK Set")
            by_kid[kid] = key
        if len(by_kid) > MAX_KEYS:
            raise ConfigError(f"{len(by_kid)} keys in one JWK Set (at most {MAX_KEYS})")
        self._by_kid: Final = by_kid
        self._keys: Final = tuple(by_kid.values())

    @classmethod
    def from_jwks(cls, jwks: Mapping[str, object], *, skip_unsupported: bool = False) -> KeySet:
        """Build from a parsed JWK Set document (RFC 7517 §5).

        With ``skip_unsupported`` (for sets published by an issuer, which may carry encryption keys or
        curves we do not use), keys of other kinds are left out instead of refusing the set. Private key
        material and malformed keys always refuse the set.
        """
        members = jwks.get("keys")
        if not isinstance(members, list):
            raise ConfigError("a JWK Set needs a 'keys' array")
        if len(members) > MAX_KEYS:
            raise ConfigError(f"{len(members)} keys in one JWK Set (at most {MAX_KEYS})")
        keys: list[PublicKey] = []
        for member in members:
            try:
                keys.append(_import(member))
            except _Unsupported as exc:
                if not skip_unsupported:
                    raise ConfigError(str(exc)) from exc
                logger.info("ignoring a key in a JWK Set: %s", exc)
        return cls(keys)

    @classmethod
    def from_json(cls, document: bytes | str, *, skip_unsupported: bool = False) -> KeySet:
        """Parse a JWK Set document."""
        if len(document) > MAX_JWKS_BYTES:
            raise ConfigError(f"JWK Set larger than {MAX_JWKS_BYTES} bytes")
        try:
            parsed = orjson.loads(document)
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"JWK Set is not JSON: {exc}") from exc
        if not isinstance(parsed, dict):
            raise ConfigError("a JWK Set must be a JSON object")
        return cls.from_jwks(parsed, skip_unsupported=skip_unsupported)

    @classmethod
    def from_file(cls, path: Path | str) -> KeySet:
        """Load a JWK Set file; every key in it must be of an accepted kind (it is the operator's file)."""
        path = Path(path)
        try:
            with path.open("rb") as file:
                document = file.read(MAX_JWKS_BYTES + 1)
        except OSError as exc:
            raise ConfigError(f"cannot read JWK Set file {path}: {exc}") from exc
        try:
            return cls.from_json(document)
        except ConfigError as exc:
            raise ConfigError(f"JWK Set file {path}: {exc.detail}") from exc

    def get(self, kid: str | None) -> PublicKey | None:
        """The key with this ``kid``; with no ``kid``, the only key of a one-key set; else None."""
        if kid is None:
            return self._keys[0] if len(self._keys) == 1 else None
        return self._by_kid.get(kid)

    async def key_for(self, kid: str | None) -> PublicKey | None:
        """``KeySource`` protocol: the same as ``get``."""
        return self.get(kid)

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._by_kid)

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[PublicKey]:
        return iter(self._keys)

    def as_jwks(self) -> dict[str, list[dict[str, object]]]:
        """The public JWK Set document, e.g. to serve at a ``jwks_uri``."""
        return {"keys": [dict(key.as_dict(private=False)) for key in self._keys]}

    def as_joserfc(self) -> JoseKeySet:
        """A fresh joserfc ``KeySet`` with the same keys (a copy: ours stays unchanged)."""
        return JoseKeySet(list(self._keys))


@dataclass(slots=True)
class RefreshSchedule:
    """When a ``RemoteKeySet`` may fetch: pure bookkeeping over timestamps, no I/O, no clock of its own."""

    refresh_interval: float = REFRESH_INTERVAL_SECONDS
    min_refetch_interval: float = MIN_REFETCH_INTERVAL_SECONDS
    max_stale: float = MAX_STALE_SECONDS
    fetched_at: float | None = None
    """Time of the last successful fetch."""
    attempted_at: float | None = None
    """Time of the last fetch, successful or not."""

    def fetch_due(self, now: float, *, unknown_kid: bool) -> bool:
        """Whether to fetch now: never twice within ``min_refetch_interval``; then on an unknown ``kid``,
        when the set is missing, or when it is older than ``refresh_interval``."""
        if self.attempted_at is None:
            return True
        if now - self.attempted_at < self.min_refetch_interval:
            return False
        return unknown_kid or self.fetched_at is None or now - self.fetched_at >= self.refresh_interval

    def usable(self, now: float) -> bool:
        """Whether the last fetched set may still be used (it exists and is not too stale)."""
        return self.fetched_at is not None and now - self.fetched_at <= self.max_stale


def _check_jwks_url(url: str, *, allow_insecure_http: bool) -> None:
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigError(f"jwks_url {url!r}: not a URL ({exc})") from exc
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname and allow_insecure_http:
        try:
            loopback = ipaddress.ip_address(parts.hostname).is_loopback
        except ValueError:
            # A host name is resolved later, by someone else; only a loopback literal is known to stay local.
            loopback = False
        if loopback:
            logger.warning("fetching JWKS over plain http from %s (allow_insecure_http)", url)
            return
    raise ConfigError(f"jwks_url {url!r}: must be https (plain http only to a loopback IP with allow_insecure_http)")


@final
class RemoteKeySet:
    """A JWK Set fetched from an issuer's ``jwks_uri``, cached, refreshed lazily on lookups.

    Call ``refresh()`` once at startup to fail fast, and ``aclose()`` at shutdown.
    """

    def __init__(
        self,
        url: str,
        ssl_context: ssl.SSLContext | None,
        *,
        allow_insecure_http: bool = False,
        clock: Callable[[], float] = time.monotonic,
        schedule: RefreshSchedule | None = None,
        timeout_seconds: float = FETCH_TIMEOUT_SECONDS,
        max_bytes: int = MAX_JWKS_BYTES,
    ) -> None:
        """``ssl_context`` None means the system trust store (aiohttp's default context, built once)."""
        _check_jwks_url(url, allow_insecure_http=allow_insecure_http)
        self.url: Final = url
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._clock = clock
        self._schedule = schedule if schedule is not None else RefreshSchedule()
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._max_bytes = max_bytes
        self._keys: KeySet | None = None
        self._last_error = ""
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None

    @property
    def current(self) -> KeySet | None:
        """The set in use, or None before the first successful fetch."""
        return self._keys

    async def key_for(self, kid: str | None) -> PublicKey | None:
        """The key for ``kid``, fetching the set first when the schedule allows and calls for it.

        Raises ``Unavailable`` when no usable set exists (never fetched, or stale beyond ``max_stale``).
        """
        keys = self._keys
        if keys is not None:
            key = keys.get(kid)
            # Also the path taken while another lookup refreshes the set: that lookup stamped
            # ``attempted_at`` before its download, so known keys are served without waiting for it.
            if key is not None and not self._schedule.fetch_due(self._clock(), unknown_kid=False):
                return key
        async with self._lock:
            # Re-read under the lock: a concurrent lookup may have fetched while we waited.
            now = self._clock()
            unknown = self._keys is None or self._keys.get(kid) is None
            if self._schedule.fetch_due(now, unknown_kid=unknown):
                await self._fetch_recording(now)
            if self._keys is None or not self._schedule.usable(now):
                raise Unavailable(f"no usable JWK Set from {self.url}: {self._last_error}")
            return self._keys.get(kid)

    async def refresh(self) -> KeySet:
        """Fetch now, regardless of the schedule; raise ``Unavailable`` if that fails."""
        async with self._lock:
            if not await self._fetch_recording(self._clock()):
                raise Unavailable(f"cannot fetch JWK Set from {self.url}: {self._last_error}")
            assert self._keys is not None
            return self._keys

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _fetch_recording(self, now: float) -> bool:
        """One fetch; on success swap the set, on failure keep the old one and remember why."""
        self._schedule.attempted_at = now
        try:
            self._keys = KeySet.from_json(await self._download(), skip_unsupported=True)
        except (aiohttp.ClientError, TimeoutError, ConfigError, _FetchFailed) as exc:
            self._last_error = exc.detail if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
            logger.warning("JWK Set fetch from %s failed: %s", self.url, self._last_error)
            return False
        self._schedule.fetched_at = now
        self._last_error = ""
        return True

    async def _download(self) -> bytes:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=2),
                timeout=self._timeout,
                trust_env=False,  # no proxy from the environment between us and the issuer
            )
        headers = {"Accept": "application/jwk-set+json, application/json"}
        # No redirects: a redirect could leave https or the issuer's host.
        async with self._session.get(self.url, headers=headers, allow_redirects=False) as response:
            if response.status != 200:
                raise _FetchFailed(f"HTTP {response.status}")
            if response.content_length is not None and response.content_length > self._max_bytes:
                raise _FetchFailed(f"JWK Set of {response.content_length} bytes (limit {self._max_bytes})")
            body = bytearray()
            async for chunk in response.content.iter_chunked(16384):
                body += chunk
                if len(body) > self._max_bytes:
                    raise _FetchFailed(f"JWK Set larger than {self._max_bytes} bytes")
            return bytes(body)
