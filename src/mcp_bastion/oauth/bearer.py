"""Bearer tokens in the ``Authorization`` header and the ``WWW-Authenticate`` challenge.

RFC 6750 §2.1 (the ``Bearer`` credentials syntax), §3 and §3.1 (the challenge and its error codes), and
RFC 9728 §5.1 (the ``resource_metadata`` parameter that points a client at our protected-resource metadata).

Invariants:
- only the header method is supported (§2.1); form bodies and query strings never carry tokens here;
- a value that is not exactly ``Bearer <b64token>`` is malformed: no second credential, no other scheme;
- nothing from the inputs reaches the challenge unquoted: characters outside the set RFC 6750 §3 allows
  inside quoted values (printable ASCII without ``"`` and ``\\``) are removed, and the URL is
  percent-encoded, so a caller-influenced string can neither close the quoted-string nor split the header.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import quote

from mcp_bastion.errors import Unauthenticated

_CREDENTIALS: Final = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9\-._~+/]+=*)")
"""RFC 6750 §2.1: ``credentials = "Bearer" 1*SP b64token``; the scheme is case-insensitive (RFC 9110 §11.1)."""

_NOT_QUOTABLE: Final = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")
"""RFC 6750 §3: error, error_description and scope values use only %x20-21 / %x23-5B / %x5D-7E."""

_URL_SAFE: Final = "!#$%&'()*+,-./:;<=>?@[]^_`{|}~"
"""Printable ASCII kept as is in the resource_metadata URL; everything else is percent-encoded."""

MAX_DESCRIPTION_LENGTH: Final = 200
"""Longer error descriptions are cut: the header is for machines, the audit log holds the detail."""


def parse_authorization(header_value: str | None) -> str:
    """Return the bearer token carried by an ``Authorization`` header value.

    Raises ``Unauthenticated`` with reason ``token_missing`` (and no RFC 6750 error code, §3.1) when there
    is no credential at all, or ``token_malformed`` / ``invalid_request`` when the value is not a single
    well-formed Bearer credential.
    """
    if header_value is None or not header_value.strip():
        # An empty header carries no authentication information, which §3.1 treats like no header.
        raise Unauthenticated("no Authorization header", reason="token_missing", error="")
    # HTTP parsers strip optional whitespace around field values; do the same for values handed to us raw.
    match = _CREDENTIALS.fullmatch(header_value.strip(" \t"))
    if match is None:
        raise Unauthenticated(
            "Authorization header is not a single Bearer b64token",
            reason="token_malformed",
            error="invalid_request",
        )
    return match.group(1)


def www_authenticate(
    *,
    resource_metadata_url: str,
    error: str = "",
    error_description: str = "",
    scope: str = "",
) -> str:
    """Build a ``WWW-Authenticate`` value: ``Bearer resource_metadata="…", error="…", …``.

    Empty optional parameters are left out; with no ``error`` the challenge only says where the metadata is
    (RFC 6750 §3.1: no error code when the request carried no credential).
    """
    params = [f'resource_metadata="{quote(resource_metadata_url, safe=_URL_SAFE)}"']
    for name, value in (("error", error), ("error_description", error_description), ("scope", scope)):
        cleaned = _NOT_QUOTABLE.sub("", value)
        if name == "error_description":
            cleaned = cleaned[:MAX_DESCRIPTION_LENGTH]
        if cleaned:
            params.append(f'{name}="{cleaned}"')
    return "Bearer " + ", ".join(params)
