"""RFC 8414 authorization server metadata and endpoint URLs."""

from __future__ import annotations

import pytest

from mcp_bastion.errors import ConfigError
from mcp_bastion.oauth.asmetadata import Endpoints, authorization_server_metadata
from tests.oauth.asworld import make_world


def test_document() -> None:
    document = make_world().server.metadata()
    assert document == {
        "issuer": "https://as.example",
        "authorization_endpoint": "https://as.example/authorize",
        "token_endpoint": "https://as.example/oauth/token",
        "registration_endpoint": "https://as.example/oauth/register",
        "revocation_endpoint": "https://as.example/oauth/revoke",
        "introspection_endpoint": "https://as.example/oauth/introspect",
        "jwks_uri": "https://as.example/oauth/jwks.json",
        "scopes_supported": ["billing:read", "customers:read", "customers:write"],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "none",
            "private_key_jwt",
        ],
        "token_endpoint_auth_signing_alg_values_supported": ["ES256", "Ed25519", "EdDSA", "PS256", "RS256"],
        "revocation_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "none",
            "private_key_jwt",
        ],
        "introspection_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
        ],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": True,
    }


def test_registration_off_is_not_advertised() -> None:
    assert "registration_endpoint" not in make_world(registration_policy="off").server.metadata()


@pytest.mark.parametrize(
    ("issuer", "paths", "token"),
    [
        pytest.param(
            "https://as.example",
            ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"),
            "https://as.example/oauth/token",
            id="no-path",
        ),
        pytest.param(
            "https://gw.example/auth",
            ("/.well-known/oauth-authorization-server/auth", "/auth/.well-known/openid-configuration"),
            "https://gw.example/auth/oauth/token",
            id="with-path",
        ),
        pytest.param(
            "http://127.0.0.1:8080",
            ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"),
            "http://127.0.0.1:8080/oauth/token",
            id="loopback-http",
        ),
    ],
)
def test_endpoints(issuer: str, paths: tuple[str, str], token: str) -> None:
    endpoints = Endpoints.for_issuer(issuer)
    assert (endpoints.metadata_paths, endpoints.token) == (paths, token)


@pytest.mark.parametrize(
    "issuer",
    [
        pytest.param("http://as.example", id="http-not-loopback"),
        pytest.param("https://as.example?x=1", id="query"),
        pytest.param("https://as.example#f", id="fragment"),
        pytest.param("https://user@as.example", id="userinfo"),
        pytest.param("as.example", id="not-a-url"),
    ],
)
def test_bad_issuer(issuer: str) -> None:
    with pytest.raises(ConfigError):
        Endpoints.for_issuer(issuer)


def test_client_id_metadata_documents_flag() -> None:
    document = authorization_server_metadata(
        Endpoints.for_issuer("https://as.example"),
        scopes_supported=[],
        grant_types=["authorization_code"],
        auth_methods=["none"],
        assertion_algorithms=["ES256"],
        registration=False,
        client_id_metadata_documents=True,
    )
    assert document["client_id_metadata_document_supported"] is True
    assert "token_endpoint_auth_signing_alg_values_supported" not in document
    assert document["introspection_endpoint_auth_methods_supported"] == []
