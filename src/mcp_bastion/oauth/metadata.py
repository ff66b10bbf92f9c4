"""OAuth 2.0 Protected Resource Metadata for each MCP endpoint the gateway serves.

RFC 9728 §2 (the metadata document), §3.1 (where it lives: ``/.well-known/oauth-protected-resource``
inserted between the host and the path of the resource identifier), §1.2 (a resource identifier is an
https URL without a fragment), RFC 6749 §3.3 (scope token syntax).

Invariants:
- only header-borne bearer tokens are advertised (``bearer_methods_supported: ["header"]``);
- identifiers are checked when the document is built, at startup: a bad one is a ``ConfigError``;
- plain http is accepted only for loopback hosts, which the local demo uses.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from typing import Final
from urllib.parse import urlsplit, urlunsplit

from mcp_bastion.errors import ConfigError

WELL_KNOWN_PATH: Final = "/.well-known/oauth-protected-resource"

_SCOPE_TOKEN: Final = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
"""RFC 6749 §3.3: ``scope-token = 1*( %x21 / %x23-5B / %x5D-7E )``."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_url(value: str, what: str) -> None:
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError for a non-numeric or out-of-range port
    except ValueError as exc:
        raise ConfigError(f"{what} {value!r}: not a URL ({exc})") from exc
    host = parts.hostname
    if not host or parts.fragment or "#" in value or parts.username is not None:
        raise ConfigError(f"{what} {value!r}: needs a host, and no fragment or user info")
    if parts.scheme != "https" and not (parts.scheme == "http" and _is_loopback(host)):
        raise ConfigError(f"{what} {value!r}: must be https (http only for loopback hosts)")


def metadata_url_for(resource: str) -> str:
    """Where the metadata for ``resource`` is published (RFC 9728 §3.1).

    ``https://gw.example:8443/mcp/customers`` →
    ``https://gw.example:8443/.well-known/oauth-protected-resource/mcp/customers``.
    """
    _check_url(resource, "resource")
    parts = urlsplit(resource)
    # §3.1: a terminating slash right after the host is removed before inserting the well-known path.
    path = "" if parts.path == "/" else parts.path
    return urlunsplit((parts.scheme, parts.netloc, WELL_KNOWN_PATH + path, parts.query, ""))


def protected_resource_metadata(
    *,
    resource: str,
    authorization_servers: Sequence[str],
    scopes_supported: Sequence[str] = (),
    resource_name: str | None = None,
) -> dict[str, object]:
    """The RFC 9728 §2 metadata document for one protected resource (an MCP endpoint)."""
    _check_url(resource, "resource")
    if isinstance(authorization_servers, str):
        raise ConfigError("authorization_servers must be a list of issuer URLs, not one string")
    if not authorization_servers:
        # MCP clients discover the authorization server from this list; without one they cannot log in.
        raise ConfigError(f"resource {resource!r}: at least one authorization server is needed")
    for issuer in authorization_servers:
        _check_url(issuer, "authorization server")
    if isinstance(scopes_supported, str):
        raise ConfigError("scopes_supported must be a list of scope tokens, not one string")
    for scope in scopes_supported:
        if not _SCOPE_TOKEN.fullmatch(scope):
            raise ConfigError(f"scopes_supported: {scope!r} is not a scope token (RFC 6749 §3.3)")
    document: dict[str, object] = {
        "resource": resource,
        "authorization_servers": list(authorization_servers),
        "bearer_methods_supported": ["header"],
    }
    if scopes_supported:
        document["scopes_supported"] = list(scopes_supported)
    if resource_name is not None:
        document["resource_name"] = resource_name
    return document
