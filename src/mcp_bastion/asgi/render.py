"""Rendering refusals: the one place a ``BastionError`` becomes bytes for a client.

The client sees the class's ``public_message``, its JSON-RPC code, its stable ``reason`` code and, for a
401, the RFC 6750 / RFC 9728 ``WWW-Authenticate`` challenge. It never sees ``detail``, a stack trace, or
anything about the upstream's internals.
"""

from __future__ import annotations

from mcp_bastion.errors import BastionError, InsufficientScope, RateLimited, Unauthenticated
from mcp_bastion.jsonrpc.message import RequestId, error_response
from mcp_bastion.oauth.bearer import www_authenticate

Headers = list[tuple[bytes, bytes]]

JSON_HEADERS: Headers = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]


def error_body(error: BastionError, msg_id: RequestId | None) -> bytes:
    return error_response(
        msg_id, error.jsonrpc_code, error.public_message, {**error.public_data(), "reason": error.public_reason}
    )


def error_headers(error: BastionError, *, resource_metadata_url: str | None) -> Headers:
    headers = list(JSON_HEADERS)
    if isinstance(error, Unauthenticated) and resource_metadata_url is not None:
        challenge = www_authenticate(resource_metadata_url=resource_metadata_url, error=error.error)
        headers.append((b"www-authenticate", challenge.encode("latin-1")))
    if isinstance(error, InsufficientScope) and resource_metadata_url is not None:
        challenge = www_authenticate(
            resource_metadata_url=resource_metadata_url,
            error="insufficient_scope",
            scope=" ".join(sorted(error.scopes)),
        )
        headers.append((b"www-authenticate", challenge.encode("latin-1")))
    if isinstance(error, RateLimited):
        headers.append((b"retry-after", str(max(1, round(error.retry_after))).encode()))
    return headers


def http_status_for(error: BastionError, *, has_id: bool) -> int:
    """JSON-RPC-level refusals of a request travel as HTTP 200; without an id there is nobody to answer."""
    if error.http_status < 400 and not has_id:
        return 400
    return error.http_status
