"""Client authentication at the token, revocation and introspection endpoints.

RFC 6749 §2.3 (a client uses exactly one method per request), §2.3.1 (``client_secret_basic``: id and
secret form-urlencoded, then HTTP Basic; ``client_secret_post``), §3.2.1 (public clients send ``client_id``
only), §5.2 (``invalid_client``, 401); RFC 7591 §2 (the method is the one registered); RFC 7523 §2.2 and
§3 (``private_key_jwt``: a JWT signed by the client's key, ``iss`` = ``sub`` = client_id, ``aud`` = us,
short ``exp``, ``jti`` used once); RFC 8725 §3.1 (the algorithm is checked against the key, never chosen
by the token).

Invariants:
- a request that carries two methods, or a method other than the registered one, is refused: a public
  client's id never unlocks a confidential client, and a confidential client cannot fall back to ``none``;
- secrets are compared as SHA-256 digests with ``hmac.compare_digest``, and an unknown client costs the
  same comparison, so timing tells nothing about which part was wrong;
- assertion claims are read only after the signature over them is verified with a registered key;
- every refusal is ``invalid_client`` (401) except a request with several methods (``invalid_request``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Final, Protocol, final
from urllib.parse import unquote_plus

import orjson
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey
from joserfc.jws import JWSRegistry

from mcp_bastion.errors import ConfigError
from mcp_bastion.oauth.access_token import SUPPORTED_ALGORITHMS
from mcp_bastion.oauth.jwks import KeySet, KeySource, PublicKey, RemoteKeySet
from mcp_bastion.oauth.refusal import Refusal
from mcp_bastion.oauth.store import ClientRecord, OAuthStore

ASSERTION_TYPE: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION_LENGTH: Final = 8 * 1024
MAX_ASSERTION_LIFETIME: Final = 300.0
"""An assertion whose ``exp`` is further away than this is refused: they are meant to be minted per request."""
LEEWAY_SECONDS: Final = 30.0
ASSERTION_ALGORITHMS: Final = frozenset({"ES256", "EdDSA", "Ed25519", "RS256", "PS256"})

# Resolved once (joserfc's registry lookup warns on every EdDSA call, see access_token).
_MODELS: Final = {name: JWSRegistry.algorithms[name] for name in SUPPORTED_ALGORITHMS}
_DUMMY_HASH: Final = hashlib.sha256(b"no such client").digest()

ClientLookup = Callable[[str], Awaitable[ClientRecord | None]]


class ClientKeys(Protocol):
    """Where a ``private_key_jwt`` client's public keys come from."""

    async def keys_for(self, client: ClientRecord) -> KeySource: ...


@final
class RegisteredClientKeys:
    """Inline ``jwks`` from the client's metadata, or its ``jwks_uri`` fetched and cached per URL."""

    def __init__(self, *, remote: Callable[[str], KeySource] | None = None) -> None:
        self._remote = remote if remote is not None else (lambda url: RemoteKeySet(url, None))
        self._by_url: dict[str, KeySource] = {}

    async def keys_for(self, client: ClientRecord) -> KeySource:
        jwks, jwks_uri = client.metadata.get("jwks"), client.metadata.get("jwks_uri")
        if isinstance(jwks, dict):
            return KeySet.from_jwks(jwks)
        if isinstance(jwks_uri, str):
            source = self._by_url.get(jwks_uri)
            if source is None:
                source = self._by_url[jwks_uri] = self._remote(jwks_uri)
            return source
        return KeySet([])

    async def aclose(self) -> None:
        for source in self._by_url.values():
            if isinstance(source, RemoteKeySet):
                await source.aclose()
        self._by_url.clear()


def _unauthorized(reason: str, description: str = "client authentication failed") -> Refusal:
    return Refusal("invalid_client", reason, description, status=401)


def _b64url(segment: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError) as exc:
        raise _unauthorized("assertion_malformed") from exc


def _basic(value: str) -> tuple[str, str]:
    """RFC 6749 §2.3.1: ``Basic base64(urlencode(id) ":" urlencode(secret))``."""
    scheme, _, encoded = value.strip().partition(" ")
    if scheme.lower() != "basic":
        raise _unauthorized("client_auth_scheme", "only the Basic scheme authenticates clients here")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise _unauthorized("client_auth_malformed") from exc
    client_id, colon, secret = decoded.partition(":")
    if not colon or not client_id:
        raise _unauthorized("client_auth_malformed")
    return unquote_plus(client_id), unquote_plus(secret)


async def authenticate_client(
    form: Mapping[str, str],
    authorization: str | None,
    *,
    lookup: ClientLookup,
    store: OAuthStore,
    keys: ClientKeys,
    audiences: frozenset[str],
    now: float,
) -> ClientRecord:
    """The client this request authenticates as; raises ``Refusal``.

    ``audiences`` are the values a client assertion's ``aud`` may name (the token endpoint URL, the issuer).
    """
    used = [
        name
        for name, present in (
            ("basic", authorization is not None and authorization.strip() != ""),
            ("post", "client_secret" in form),
            ("jwt", "client_assertion" in form or "client_assertion_type" in form),
        )
        if present
    ]
    if len(used) > 1:
        raise Refusal("invalid_request", "client_auth_multiple", "use exactly one client authentication method")
    method = used[0] if used else "none"
    form_id = form.get("client_id")

    if method == "jwt":
        return await _assertion(form, lookup=lookup, store=store, keys=keys, audiences=audiences, now=now)
    if method == "basic":
        assert authorization is not None
        client_id, secret = _basic(authorization)
        if form_id is not None and form_id != client_id:
            raise _unauthorized("client_id_mismatch")
        expected_method = "client_secret_basic"
    elif method == "post":
        client_id, secret = form_id or "", form["client_secret"]
        expected_method = "client_secret_post"
    else:
        client_id, secret = form_id or "", ""
        expected_method = "none"
    if not client_id:
        raise _unauthorized("client_id_missing")

    client = await lookup(client_id)
    if expected_method == "none":
        if client is None:
            raise _unauthorized("client_unknown")
        if client.auth_method != "none":
            raise _unauthorized("client_auth_method_mismatch")
        return client
    stored = client.secret_hash if client is not None and client.secret_hash is not None else _DUMMY_HASH
    matches = hmac.compare_digest(hashlib.sha256(secret.encode("utf-8")).digest(), stored)
    if client is None:
        raise _unauthorized("client_unknown")
    if client.auth_method != expected_method:
        raise _unauthorized("client_auth_method_mismatch")
    if not matches or client.secret_hash is None:
        raise _unauthorized("client_secret_invalid")
    return client


def _number(claims: Mapping[str, object], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _unauthorized("assertion_malformed")
    return float(value)


def _verify(alg: str, key: PublicKey, signing_input: bytes, signature: bytes) -> bool:
    key_type, curve = SUPPORTED_ALGORITHMS[alg]
    if not isinstance(key, key_type) or (
        curve is not None and isinstance(key, ECKey | OKPKey) and key.curve_name != curve
    ):
        return False
    try:
        return _MODELS[alg].verify(signing_input, signature, key)
    except (JoseError, ValueError, TypeError):
        return False


async def _assertion(
    form: Mapping[str, str],
    *,
    lookup: ClientLookup,
    store: OAuthStore,
    keys: ClientKeys,
    audiences: frozenset[str],
    now: float,
) -> ClientRecord:
    """RFC 7523 §2.2 / §3: authenticate with a signed JWT."""
    if form.get("client_assertion_type") != ASSERTION_TYPE:
        raise _unauthorized("assertion_type_invalid")
    token = form.get("client_assertion", "")
    if not token or len(token) > MAX_ASSERTION_LENGTH or not token.isascii():
        raise _unauthorized("assertion_malformed")
    parts = token.split(".")
    if len(parts) != 3:
        raise _unauthorized("assertion_malformed")
    try:
        header, claims = orjson.loads(_b64url(parts[0])), orjson.loads(_b64url(parts[1]))
    except orjson.JSONDecodeError as exc:
        raise _unauthorized("assertion_malformed") from exc
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise _unauthorized("assertion_malformed")
    alg, kid = header.get("alg"), header.get("kid")
    if not isinstance(alg, str) or alg not in ASSERTION_ALGORITHMS or "crit" in header:
        raise _unauthorized("assertion_alg_forbidden")
    if kid is not None and not isinstance(kid, str):
        raise _unauthorized("assertion_malformed")
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise _unauthorized("assertion_malformed")
    form_id = form.get("client_id")
    if form_id is not None and form_id != subject:
        raise _unauthorized("client_id_mismatch")

    # The unverified ``sub`` only selects whose keys to try.
    client = await lookup(subject)
    if client is None:
        raise _unauthorized("client_unknown")
    if client.auth_method != "private_key_jwt":
        raise _unauthorized("client_auth_method_mismatch")
    try:
        key = await (await keys.keys_for(client)).key_for(kid)
    except ConfigError as exc:
        raise _unauthorized("assertion_key_unknown") from exc
    if key is None:
        raise _unauthorized("assertion_key_unknown")
    signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
    if not _verify(alg, key, signing_input, _b64url(parts[2])):
        raise _unauthorized("assertion_signature_invalid")

    # From here on the claims are the client's own.
    if claims.get("iss") != client.client_id or subject != client.client_id:
        raise _unauthorized("assertion_issuer_invalid")
    audience = claims.get("aud")
    named = [audience] if isinstance(audience, str) else audience if isinstance(audience, list) else []
    if not any(isinstance(item, str) and item in audiences for item in named):
        raise _unauthorized("assertion_audience_invalid")
    expires_at, issued_at, not_before = _number(claims, "exp"), _number(claims, "iat"), _number(claims, "nbf")
    if expires_at is None or now >= expires_at + LEEWAY_SECONDS:
        raise _unauthorized("assertion_expired")
    if expires_at - now > MAX_ASSERTION_LIFETIME + LEEWAY_SECONDS:
        raise _unauthorized("assertion_lifetime_too_long")
    if (issued_at is not None and issued_at > now + LEEWAY_SECONDS) or (
        not_before is not None and not_before > now + LEEWAY_SECONDS
    ):
        raise _unauthorized("assertion_not_yet_valid")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not 0 < len(jti) <= 256:
        raise _unauthorized("assertion_jti_missing")
    if not await store.remember_assertion(client.client_id, jti, expires_at + LEEWAY_SECONDS, now):
        raise _unauthorized("assertion_replayed")
    return client
