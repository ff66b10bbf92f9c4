"""The authorization server's metadata document and the URLs of its endpoints.

RFC 8414 §2 (metadata members), §3 (published at ``/.well-known/oauth-authorization-server`` inserted
before the issuer's path), §3.3 (``issuer`` must equal the configured issuer exactly); RFC 9207 §3
(``authorization_response_iss_parameter_supported``); RFC 7636 §6.2 (``code_challenge_methods_supported``);
OpenID Connect Discovery 1.0 §4 (the ``/.well-known/openid-configuration`` alias, appended to the issuer);
draft-ietf-oauth-client-id-metadata-document (``client_id_metadata_document_supported``).

Invariants:
- every URL is derived from the one configured public issuer (correct behind a TLS-terminating proxy);
- only what the server really does is advertised: ``S256`` only, ``code`` only, the auth methods it checks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from mcp_bastion.errors import ConfigError
from mcp_bastion.jsonrpc.message import JSONValue
from mcp_bastion.oauth import pkce
from mcp_bastion.oauth.metadata import metadata_url_for

WELL_KNOWN_PATH: Final = "/.well-known/oauth-authorization-server"
OPENID_PATH: Final = "/.well-known/openid-configuration"


@dataclass(frozen=True, slots=True)
class Endpoints:
    """The absolute URLs of the authorization server's endpoints, all under the issuer."""

    issuer: str
    authorization: str
    token: str
    registration: str
    revocation: str
    introspection: str
    jwks: str

    @classmethod
    def for_issuer(cls, issuer: str) -> Endpoints:
        parts = urlsplit(issuer)
        if parts.query or parts.fragment or "#" in issuer or "?" in issuer:
            raise ConfigError(f"issuer {issuer!r}: RFC 8414 §2 forbids query and fragment components")
        metadata_url_for(issuer)  # same rules as a resource URL: https (http only on loopback), a host
        base = issuer.rstrip("/")
        return cls(
            issuer=issuer,
            authorization=base + "/authorize",
            token=base + "/oauth/token",
            registration=base + "/oauth/register",
            revocation=base + "/oauth/revoke",
            introspection=base + "/oauth/introspect",
            jwks=base + "/oauth/jwks.json",
        )

    @property
    def metadata_paths(self) -> tuple[str, str]:
        """Request paths that serve the metadata (RFC 8414 §3, and the OpenID alias), for the issuer's path."""
        path = urlsplit(self.issuer).path.rstrip("/")
        return WELL_KNOWN_PATH + path, path + OPENID_PATH


def _sorted(values: Iterable[str]) -> list[JSONValue]:
    return list(sorted(set(values)))


def authorization_server_metadata(
    endpoints: Endpoints,
    *,
    scopes_supported: Iterable[str],
    grant_types: Iterable[str],
    auth_methods: Iterable[str],
    assertion_algorithms: Iterable[str],
    registration: bool,
    client_id_metadata_documents: bool,
) -> dict[str, JSONValue]:
    """The RFC 8414 §2 document."""
    methods = _sorted(auth_methods)
    document: dict[str, JSONValue] = {
        "issuer": endpoints.issuer,
        "authorization_endpoint": endpoints.authorization,
        "token_endpoint": endpoints.token,
        "jwks_uri": endpoints.jwks,
        "scopes_supported": _sorted(scopes_supported),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": _sorted(grant_types),
        "token_endpoint_auth_methods_supported": list(methods),
        "revocation_endpoint": endpoints.revocation,
        "revocation_endpoint_auth_methods_supported": list(methods),
        "introspection_endpoint": endpoints.introspection,
        "introspection_endpoint_auth_methods_supported": [m for m in methods if m != "none"],
        "code_challenge_methods_supported": list(pkce.METHODS_SUPPORTED),
        "authorization_response_iss_parameter_supported": True,
    }
    if "private_key_jwt" in methods:
        document["token_endpoint_auth_signing_alg_values_supported"] = _sorted(assertion_algorithms)
    if registration:
        document["registration_endpoint"] = endpoints.registration
    if client_id_metadata_documents:
        document["client_id_metadata_document_supported"] = True
    return document
