"""Redirect URIs: which ones a client may register, and whether a request's URI is one of them.

RFC 6749 §3.1.2 (absolute URI, no fragment), §3.1.2.2 and OAuth 2.1 §2.3.1 / RFC 9700 §4.1.3 (exact string
matching, no patterns), RFC 8252 §7.1 (private-use URI schemes in reverse-domain form), §7.3 (loopback
redirects: http on a loopback IP; the port may differ at request time), §8.3 (``localhost`` is tolerated,
the literal addresses are preferred).

Invariants:
- a registered URI is https, or http on a loopback host (``127.0.0.1``, ``[::1]``, ``localhost``), or a
  reverse-domain private-use scheme (the scheme contains a dot, e.g. ``com.example.app:/callback``);
- no fragment, no user info, no ``.``/``..`` path segments, no percent-encoded ``/``, ``\\`` or ``.``, no
  whitespace, control or non-ASCII characters: all of them can make two parsers disagree about the target;
- matching is string equality; the only exception is the port of an http loopback URI, which may vary
  (everything else, including the host spelling, must still be equal character for character).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final
from urllib.parse import SplitResult, urlsplit

from mcp_bastion.oauth.refusal import Refusal

MAX_URI_LENGTH: Final = 2000
LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "[::1]", "localhost"})

_SCHEME: Final = re.compile(r"[a-z][a-z0-9+.\-]*")
_FORBIDDEN_CHARS: Final = re.compile(r"[\x00-\x20\x7f-\U0010ffff\\#<>\"`{}|^]")
_ENCODED_TRICKS: Final = re.compile(r"%(2f|5c|2e|00)", re.IGNORECASE)
_NETLOC: Final = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^:\[\]@]+)(?::(?P<port>[0-9]{1,5}))?")


def _refuse(reason: str, error: str) -> Refusal:
    return Refusal(error, reason, "redirect_uri is not acceptable")


def _parse(uri: str, error: str) -> SplitResult:
    """Parse and apply the rules every redirect URI (registered or requested) must meet."""
    if not uri or len(uri) > MAX_URI_LENGTH:
        raise _refuse("redirect_uri_malformed", error)
    if _FORBIDDEN_CHARS.search(uri):
        # '#' covers fragments (even an empty one); the rest are characters parsers disagree about.
        raise _refuse("redirect_uri_malformed", error)
    if _ENCODED_TRICKS.search(uri):
        raise _refuse("redirect_uri_path_trick", error)
    try:
        parts = urlsplit(uri)
    except ValueError as exc:
        raise _refuse("redirect_uri_malformed", error) from exc
    if not _SCHEME.fullmatch(parts.scheme):
        raise _refuse("redirect_uri_malformed", error)
    if "@" in parts.netloc:
        raise _refuse("redirect_uri_userinfo", error)
    if any(segment in (".", "..") for segment in parts.path.split("/")):
        raise _refuse("redirect_uri_path_trick", error)
    if parts.scheme in ("https", "http"):
        match = _NETLOC.fullmatch(parts.netloc)
        if match is None:
            raise _refuse("redirect_uri_malformed", error)
        port = match.group("port")
        if port is not None and not 0 < int(port) <= 65535:
            raise _refuse("redirect_uri_malformed", error)
        if parts.scheme == "http" and not is_loopback(parts):
            raise _refuse("redirect_uri_insecure", error)
    elif "." not in parts.scheme:
        # RFC 8252 §7.1: private-use schemes are reverse domain names; this also rules out javascript:,
        # data:, file: and every other registered single-word scheme.
        raise _refuse("redirect_uri_scheme", error)
    elif not parts.path.startswith("/") or parts.netloc:
        # ``com.example.app:/path`` only: an authority part would make it look like a host to some parsers.
        raise _refuse("redirect_uri_malformed", error)
    return parts


def _host(parts: SplitResult) -> str:
    match = _NETLOC.fullmatch(parts.netloc)
    return match.group("host") if match else ""


def is_loopback(parts: SplitResult) -> bool:
    """RFC 8252 §7.3: the host is spelled as one of the loopback names we accept (other spellings of
    127.0.0.0/8 are refused rather than normalised: normalising is how exact matching gets bypassed)."""
    return _host(parts) in LOOPBACK_HOSTS


def check_registrable(uri: str) -> str:
    """Validate a redirect URI a client wants to register (RFC 7591 ``invalid_redirect_uri``)."""
    _parse(uri, "invalid_redirect_uri")
    return uri


def match(requested: str, registered: Iterable[str]) -> str:
    """Return ``requested`` if it is one of the ``registered`` URIs; raise ``Refusal`` (never redirected).

    Exact string comparison, except that an http loopback URI matches whatever port the request names.
    """
    parts = _parse(requested, "invalid_request")
    for candidate in registered:
        if candidate == requested:
            return requested
        if parts.scheme == "http":
            try:
                other = urlsplit(candidate)
            except ValueError:
                continue
            if (
                other.scheme == "http"
                and is_loopback(other)
                and _host(other) == _host(parts)
                and (other.path, other.query) == (parts.path, parts.query)
                and "#" not in candidate
            ):
                return requested
    raise Refusal("invalid_request", "redirect_uri_mismatch", "redirect_uri is not registered for this client")


def redirect_host(uri: str) -> str:
    """What the consent page names as the destination: host and port, or the private-use scheme."""
    parts = urlsplit(uri)
    return parts.netloc if parts.scheme in ("https", "http") else parts.scheme + ":"
