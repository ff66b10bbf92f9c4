"""OAuth 2.0 Dynamic Client Registration, and the same validation for client ID metadata documents.

RFC 7591 §2 (client metadata and its defaults), §2.1 (grant and response types must agree), §3.1 (the
request, optionally with an initial access token), §3.2.1 (the response: the secret is returned once),
§3.2.2 (``invalid_redirect_uri``, ``invalid_client_metadata``). OAuth Client ID Metadata Documents
(draft-ietf-oauth-client-id-metadata-document §4: the document's ``client_id`` is its own URL, and it
cannot hold a shared secret).

Invariants:
- only what we understand is kept: unknown metadata is dropped (§2: "MUST ignore"), so nothing a client
  sends ends up on a consent page or in a token unvalidated;
- grant types are ``authorization_code``, ``refresh_token`` and, for confidential clients only,
  ``client_credentials``; the only response type is ``code``;
- a client secret is 256 random bits, returned once and stored as its SHA-256 digest (a high-entropy
  secret needs no slow hash);
- a registered scope list can only narrow what the gateway's resources offer, never name new scopes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import urlsplit

import orjson

from mcp_bastion.errors import ConfigError
from mcp_bastion.jsonrpc.message import JSONValue
from mcp_bastion.oauth import redirects, scopes
from mcp_bastion.oauth.jwks import KeySet
from mcp_bastion.oauth.refusal import Refusal
from mcp_bastion.oauth.store import ClientKind, ClientRecord

RegistrationPolicy = Literal["open", "token", "off"]
"""``open``: anyone may register; ``token``: an initial access token is required (RFC 7591 §3); ``off``."""
AuthMethod = Literal["none", "client_secret_basic", "client_secret_post", "private_key_jwt"]

AUTH_METHODS: Final[frozenset[str]] = frozenset(
    {"none", "client_secret_basic", "client_secret_post", "private_key_jwt"}
)
SECRET_METHODS: Final = frozenset({"client_secret_basic", "client_secret_post"})
TOKEN_EXCHANGE: Final = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 - a grant type name
"""RFC 8693 §2.1: for gateways and services that act for a user towards another resource."""
GRANT_TYPES: Final = frozenset({"authorization_code", "refresh_token", "client_credentials", TOKEN_EXCHANGE})
MAX_REDIRECT_URIS: Final = 20
MAX_NAME_LENGTH: Final = 128
SECRET_BYTES: Final = 32
"""256-bit client secrets."""
CLIENT_ID_BYTES: Final = 16


def _bad(reason: str, description: str, error: str = "invalid_client_metadata") -> Refusal:
    return Refusal(error, reason, description)


def secret_hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


def check_policy(policy: RegistrationPolicy, authorization: str | None, initial_tokens: frozenset[bytes]) -> None:
    """May this request register a client? ``initial_tokens`` holds SHA-256 digests of the accepted tokens."""
    if policy == "off":
        raise Refusal("access_denied", "registration_disabled", "dynamic client registration is off", status=403)
    if policy == "open":
        return
    scheme, _, token = (authorization or "").strip().partition(" ")
    presented = hashlib.sha256(token.strip().encode("utf-8")).digest()
    # Compare against every accepted digest, so the time taken does not depend on which one matched.
    matched = False
    for accepted in initial_tokens:
        matched |= hmac.compare_digest(presented, accepted)
    if scheme.lower() != "bearer" or not token.strip() or not matched:
        raise Refusal("invalid_token", "registration_token_invalid", "initial access token required", status=401)


def _string_list(body: Mapping[str, object], name: str, default: list[str]) -> list[str]:
    value = body.get(name)
    if value is None:
        return list(default)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _bad("metadata_malformed", f"{name} must be an array of strings")
    return list(dict.fromkeys(value))  # de-duplicated, order kept


def _optional_string(body: Mapping[str, object], name: str) -> str | None:
    value = body.get(name)
    if value is None or isinstance(value, str):
        return value
    raise _bad("metadata_malformed", f"{name} must be a string")


def _https_url(value: str, name: str) -> str:
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname or parts.fragment or parts.username is not None:
        raise _bad("metadata_malformed", f"{name} must be an https URL")
    return value


def validate_metadata(body: Mapping[str, object], *, known_scopes: frozenset[str]) -> dict[str, JSONValue]:
    """RFC 7591 §2 client metadata → the metadata we store (defaults filled in, unknown members dropped)."""
    method = body.get("token_endpoint_auth_method", "client_secret_basic")
    if not isinstance(method, str) or method not in AUTH_METHODS:
        raise _bad("auth_method_unsupported", "token_endpoint_auth_method is not supported")
    grants = _string_list(body, "grant_types", ["authorization_code"])
    if not grants or not GRANT_TYPES.issuperset(grants):
        raise _bad(
            "grant_type_unsupported",
            "grant_types may only be authorization_code, refresh_token, client_credentials, token-exchange",
        )
    if ("client_credentials" in grants or TOKEN_EXCHANGE in grants) and method == "none":
        raise _bad("grant_type_unsupported", "client_credentials and token exchange need a confidential client")
    if "refresh_token" in grants and "authorization_code" not in grants:
        raise _bad("grant_type_unsupported", "refresh_token comes with authorization_code")
    code_flow = "authorization_code" in grants
    response_types = _string_list(body, "response_types", ["code"] if code_flow else [])
    if not {"code"}.issuperset(response_types) or (("code" in response_types) != code_flow):
        raise _bad("response_type_unsupported", 'response_types must be ["code"] with authorization_code')

    redirect_uris = _string_list(body, "redirect_uris", [])
    if code_flow and not redirect_uris:
        raise _bad("redirect_uri_missing", "redirect_uris is required", "invalid_redirect_uri")
    if len(redirect_uris) > MAX_REDIRECT_URIS:
        raise _bad("redirect_uri_too_many", "too many redirect_uris", "invalid_redirect_uri")
    for uri in redirect_uris:
        redirects.check_registrable(uri)

    metadata: dict[str, JSONValue] = {
        "redirect_uris": list(redirect_uris),
        "token_endpoint_auth_method": method,
        "grant_types": list(grants),
        "response_types": list(response_types),
    }
    name = _optional_string(body, "client_name")
    if name is not None:
        if not 0 < len(name) <= MAX_NAME_LENGTH or not name.isprintable():
            raise _bad("metadata_malformed", "client_name must be 1-128 printable characters")
        metadata["client_name"] = name
    scope = _optional_string(body, "scope")
    if scope is not None:
        wanted = scopes.parse(scope, error="invalid_client_metadata")
        # Scopes we do not offer (e.g. "openid", "offline_access") are dropped; a list that named only
        # those would leave nothing, and an empty list must not be read as "no limit".
        kept = wanted & known_scopes
        if not kept:
            raise _bad("scope_unknown", "scope names no scope this server offers")
        metadata["scope"] = scopes.render(kept)

    jwks, jwks_uri = body.get("jwks"), _optional_string(body, "jwks_uri")
    if method == "private_key_jwt":
        if (jwks is None) == (jwks_uri is None):
            raise _bad("client_keys_invalid", "private_key_jwt needs exactly one of jwks and jwks_uri")
        if jwks_uri is not None:
            metadata["jwks_uri"] = _https_url(jwks_uri, "jwks_uri")
        else:
            if not isinstance(jwks, dict):
                raise _bad("client_keys_invalid", "jwks must be a JWK Set object")
            try:
                keys = KeySet.from_jwks(jwks)
            except ConfigError as exc:
                raise _bad("client_keys_invalid", "jwks is not an acceptable JWK Set") from exc
            if not len(keys):
                raise _bad("client_keys_invalid", "jwks is empty")
            metadata["jwks"] = orjson.loads(orjson.dumps(keys.as_jwks()))  # the keys as we understood them
    elif jwks is not None or jwks_uri is not None:
        raise _bad("client_keys_invalid", "jwks and jwks_uri are only for private_key_jwt")
    return metadata


@dataclass(frozen=True, slots=True)
class Registration:
    """A newly registered client and the one copy of its secret."""

    record: ClientRecord
    client_secret: str | None

    def response(self) -> dict[str, JSONValue]:
        """RFC 7591 §3.2.1 client information response."""
        document: dict[str, JSONValue] = {
            "client_id": self.record.client_id,
            "client_id_issued_at": int(self.record.created_at),
            **self.record.metadata,
        }
        if self.client_secret is not None:
            document["client_secret"] = self.client_secret
            document["client_secret_expires_at"] = 0  # §3.2.1: 0 means it does not expire
        return document


def _token(random: Callable[[int], bytes], size: int) -> str:
    return base64.urlsafe_b64encode(random(size)).rstrip(b"=").decode("ascii")


def register(
    body: Mapping[str, object],
    *,
    known_scopes: frozenset[str],
    now: float,
    kind: ClientKind = "registered",
    random: Callable[[int], bytes] = secrets.token_bytes,
) -> Registration:
    """Validate a registration request and create the client (not yet stored)."""
    metadata = validate_metadata(body, known_scopes=known_scopes)
    secret = _token(random, SECRET_BYTES) if metadata["token_endpoint_auth_method"] in SECRET_METHODS else None
    record = ClientRecord(
        # Hex, not base64url: an ID starting with "-" reads as an option to `mcp-bastion clients remove`.
        client_id=random(CLIENT_ID_BYTES).hex(),
        kind=kind,
        metadata=metadata,
        secret_hash=None if secret is None else secret_hash(secret),
        created_at=now,
    )
    return Registration(record, secret)


def metadata_document_client(
    url: str, document: Mapping[str, object], *, known_scopes: frozenset[str], now: float, ttl: float
) -> ClientRecord:
    """A client from its client ID metadata document fetched from ``url`` (cached until ``now + ttl``)."""
    if document.get("client_id") != url:
        raise _bad("metadata_document_mismatch", "client_id in the document is not its URL", "invalid_client")
    if "client_secret" in document or document.get("token_endpoint_auth_method", "none") in SECRET_METHODS:
        # A document anyone can read cannot hold, or point to, a shared secret.
        raise _bad("auth_method_unsupported", "a metadata document client cannot use a shared secret", "invalid_client")
    body = {"token_endpoint_auth_method": "none", **document}
    try:
        metadata = validate_metadata(body, known_scopes=known_scopes)
    except Refusal as exc:
        raise Refusal("invalid_client", exc.reason, exc.description) from exc
    return ClientRecord(
        client_id=url, kind="metadata", metadata=metadata, secret_hash=None, created_at=now, expires_at=now + ttl
    )
