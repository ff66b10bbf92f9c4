"""RFC 7591 dynamic client registration: validation, defaults, the secret returned once and stored hashed,
the registration policy, and client ID metadata documents."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from joserfc.jwk import ECKey

from mcp_bastion.oauth import registration
from mcp_bastion.oauth.refusal import Refusal
from tests.oauth.asworld import seeded
from tests.oauth.support import public

KNOWN = frozenset({"customers:read", "customers:write"})
NOW = 1_800_000_000.0
PUBLIC_BODY: dict[str, Any] = {
    "redirect_uris": ["https://app.example/cb"],
    "token_endpoint_auth_method": "none",
    "grant_types": ["authorization_code", "refresh_token"],
    "response_types": ["code"],
    "client_name": "App",
}


def _register(body: dict[str, Any]) -> registration.Registration:
    return registration.register(body, known_scopes=KNOWN, now=NOW, random=seeded(7))


def test_public_client() -> None:
    registered = _register(PUBLIC_BODY)
    assert registered.client_secret is None
    assert registered.record.secret_hash is None
    assert registered.record.auth_method == "none"
    assert registered.record.kind == "registered"
    response = registered.response()
    assert response["client_id"] == registered.record.client_id
    assert response["client_id_issued_at"] == int(NOW)
    assert "client_secret" not in response
    assert response["redirect_uris"] == ["https://app.example/cb"]


def test_client_ids_never_read_as_a_command_line_option() -> None:
    # Random bytes whose base64url form starts with "-" (0xF8 -> "-"): the CI once drew such an ID and
    # `mcp-bastion clients remove <id>` took it for an option.
    registered = registration.register(PUBLIC_BODY, known_scopes=KNOWN, now=NOW, random=lambda n: b"\xf8" * n)
    assert registered.record.client_id == "f8" * registration.CLIENT_ID_BYTES


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_confidential_client_secret_returned_once_stored_hashed(method: str) -> None:
    registered = _register({**PUBLIC_BODY, "token_endpoint_auth_method": method})
    secret = registered.client_secret
    assert secret is not None
    assert len(secret) == 43  # 256 bits, base64url
    assert registered.record.secret_hash == hashlib.sha256(secret.encode()).digest()
    assert secret.encode() not in repr(registered.record).encode()
    response = registered.response()
    assert response["client_secret"] == secret
    assert response["client_secret_expires_at"] == 0


def test_defaults_are_rfc7591() -> None:
    registered = _register({"redirect_uris": ["https://app.example/cb"]})
    assert registered.record.auth_method == "client_secret_basic"
    assert registered.record.grant_types == frozenset({"authorization_code"})
    assert registered.record.metadata["response_types"] == ["code"]
    assert registered.client_secret is not None


def test_unknown_metadata_dropped() -> None:
    registered = _register({**PUBLIC_BODY, "logo_uri": "https://evil.example/x.png", "software_statement": "x"})
    assert "logo_uri" not in registered.record.metadata
    assert "software_statement" not in registered.response()


def test_scope_narrowed_to_known() -> None:
    registered = _register({**PUBLIC_BODY, "scope": "openid customers:read offline_access"})
    assert registered.record.scopes == frozenset({"customers:read"})


def test_private_key_jwt_inline_jwks() -> None:
    key = ECKey.generate_key("P-256", private=True)
    registered = _register(
        {**PUBLIC_BODY, "token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": [public(key)]}}
    )
    assert registered.client_secret is None
    assert registered.record.auth_method == "private_key_jwt"


def test_client_credentials_client() -> None:
    registered = _register({"token_endpoint_auth_method": "client_secret_basic", "grant_types": ["client_credentials"]})
    assert registered.record.grant_types == frozenset({"client_credentials"})
    assert registered.record.redirect_uris == ()
    assert registered.record.metadata["response_types"] == []


PRIVATE_JWK = ECKey.generate_key("P-256", private=True).as_dict(private=True)


@pytest.mark.parametrize(
    ("changes", "error", "reason"),
    [
        pytest.param(
            {"token_endpoint_auth_method": "tls_client_auth"},
            "invalid_client_metadata",
            "auth_method_unsupported",
            id="auth-method-unknown",
        ),
        pytest.param(
            {"token_endpoint_auth_method": 1},
            "invalid_client_metadata",
            "auth_method_unsupported",
            id="auth-method-not-string",
        ),
        pytest.param({"grant_types": ["implicit"]}, "invalid_client_metadata", "grant_type_unsupported", id="implicit"),
        pytest.param({"grant_types": ["password"]}, "invalid_client_metadata", "grant_type_unsupported", id="password"),
        pytest.param({"grant_types": []}, "invalid_client_metadata", "grant_type_unsupported", id="no-grants"),
        pytest.param(
            {"grant_types": ["authorization_code", "client_credentials"]},
            "invalid_client_metadata",
            "grant_type_unsupported",
            id="client-credentials-public",
        ),
        pytest.param(
            {"grant_types": ["refresh_token"]}, "invalid_client_metadata", "grant_type_unsupported", id="refresh-alone"
        ),
        pytest.param(
            {"grant_types": "authorization_code"}, "invalid_client_metadata", "metadata_malformed", id="grants-not-list"
        ),
        pytest.param(
            {"response_types": ["token"]},
            "invalid_client_metadata",
            "response_type_unsupported",
            id="response-type-token",
        ),
        pytest.param(
            {"response_types": ["code", "id_token"]},
            "invalid_client_metadata",
            "response_type_unsupported",
            id="response-type-hybrid",
        ),
        pytest.param(
            {"response_types": []},
            "invalid_client_metadata",
            "response_type_unsupported",
            id="code-grant-without-code-response",
        ),
        pytest.param({"redirect_uris": []}, "invalid_redirect_uri", "redirect_uri_missing", id="no-redirects"),
        pytest.param({"redirect_uris": None}, "invalid_redirect_uri", "redirect_uri_missing", id="redirects-null"),
        pytest.param(
            {"redirect_uris": ["http://app.example/cb"]},
            "invalid_redirect_uri",
            "redirect_uri_insecure",
            id="redirect-http",
        ),
        pytest.param(
            {"redirect_uris": ["https://app.example/cb#x"]},
            "invalid_redirect_uri",
            "redirect_uri_malformed",
            id="redirect-fragment",
        ),
        pytest.param(
            {"redirect_uris": [f"https://app.example/{i}" for i in range(21)]},
            "invalid_redirect_uri",
            "redirect_uri_too_many",
            id="too-many-redirects",
        ),
        pytest.param({"redirect_uris": [1]}, "invalid_client_metadata", "metadata_malformed", id="redirect-not-string"),
        pytest.param({"client_name": ""}, "invalid_client_metadata", "metadata_malformed", id="name-empty"),
        pytest.param(
            {"client_name": "a\u202eb"}, "invalid_client_metadata", "metadata_malformed", id="name-bidi-control"
        ),
        pytest.param({"client_name": "x" * 129}, "invalid_client_metadata", "metadata_malformed", id="name-long"),
        pytest.param({"client_name": 5}, "invalid_client_metadata", "metadata_malformed", id="name-not-string"),
        pytest.param({"scope": "openid"}, "invalid_client_metadata", "scope_unknown", id="scope-only-unknown"),
        pytest.param({"scope": 'a"b'}, "invalid_client_metadata", "scope_malformed", id="scope-malformed"),
        pytest.param(
            {"token_endpoint_auth_method": "private_key_jwt"},
            "invalid_client_metadata",
            "client_keys_invalid",
            id="private-key-jwt-without-keys",
        ),
        pytest.param(
            {
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks": {"keys": []},
                "jwks_uri": "https://app.example/jwks",
            },
            "invalid_client_metadata",
            "client_keys_invalid",
            id="private-key-jwt-both",
        ),
        pytest.param(
            {"token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": [PRIVATE_JWK]}},
            "invalid_client_metadata",
            "client_keys_invalid",
            id="jwks-with-private-key",
        ),
        pytest.param(
            {"token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": []}},
            "invalid_client_metadata",
            "client_keys_invalid",
            id="jwks-empty",
        ),
        pytest.param(
            {"token_endpoint_auth_method": "private_key_jwt", "jwks": []},
            "invalid_client_metadata",
            "client_keys_invalid",
            id="jwks-not-object",
        ),
        pytest.param(
            {"token_endpoint_auth_method": "private_key_jwt", "jwks_uri": "http://app.example/jwks"},
            "invalid_client_metadata",
            "metadata_malformed",
            id="jwks-uri-http",
        ),
        pytest.param(
            {"jwks_uri": "https://app.example/jwks"},
            "invalid_client_metadata",
            "client_keys_invalid",
            id="jwks-uri-without-private-key-jwt",
        ),
    ],
)
def test_refused(changes: dict[str, Any], error: str, reason: str) -> None:
    with pytest.raises(Refusal) as caught:
        _register({**PUBLIC_BODY, **changes})
    assert (caught.value.error, caught.value.reason) == (error, reason)


TOKEN_HASHES = frozenset({hashlib.sha256(b"initial-token").digest()})


@pytest.mark.parametrize(
    ("policy", "authorization", "outcome"),
    [
        pytest.param("open", None, None, id="open"),
        pytest.param("token", "Bearer initial-token", None, id="token-ok"),
        pytest.param("token", "bearer initial-token", None, id="token-scheme-case"),
        pytest.param("token", None, ("invalid_token", "registration_token_invalid", 401), id="token-missing"),
        pytest.param("token", "Bearer wrong", ("invalid_token", "registration_token_invalid", 401), id="token-wrong"),
        pytest.param(
            "token",
            "Basic initial-token",
            ("invalid_token", "registration_token_invalid", 401),
            id="token-wrong-scheme",
        ),
        pytest.param("off", "Bearer initial-token", ("access_denied", "registration_disabled", 403), id="off"),
    ],
)
def test_policy(
    policy: registration.RegistrationPolicy, authorization: str | None, outcome: tuple[str, str, int] | None
) -> None:
    if outcome is None:
        registration.check_policy(policy, authorization, TOKEN_HASHES)
        return
    with pytest.raises(Refusal) as caught:
        registration.check_policy(policy, authorization, TOKEN_HASHES)
    assert (caught.value.error, caught.value.reason, caught.value.status) == outcome


URL = "https://app.example/client.json"
DOCUMENT: dict[str, Any] = {
    "client_id": URL,
    "client_name": "App",
    "redirect_uris": ["https://app.example/cb"],
    "grant_types": ["authorization_code", "refresh_token"],
}


def test_metadata_document_client() -> None:
    record = registration.metadata_document_client(URL, DOCUMENT, known_scopes=KNOWN, now=NOW, ttl=60)
    assert (record.client_id, record.kind, record.auth_method, record.expires_at) == (URL, "metadata", "none", NOW + 60)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        pytest.param(
            {"client_id": "https://other.example/client.json"}, "metadata_document_mismatch", id="client-id-elsewhere"
        ),
        pytest.param(
            {"token_endpoint_auth_method": "client_secret_basic"}, "auth_method_unsupported", id="shared-secret-method"
        ),
        pytest.param({"client_secret": "s"}, "auth_method_unsupported", id="embedded-secret"),
        pytest.param({"redirect_uris": ["http://app.example/cb"]}, "redirect_uri_insecure", id="bad-redirect"),
    ],
)
def test_metadata_document_refused(changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(Refusal) as caught:
        registration.metadata_document_client(URL, {**DOCUMENT, **changes}, known_scopes=KNOWN, now=NOW, ttl=60)
    assert (caught.value.error, caught.value.reason) == ("invalid_client", reason)
