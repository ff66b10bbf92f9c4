"""What the delegation modes share when they talk to an upstream's authorization server: the URL rule,
one pooled HTTP client, and reading a bounded JSON answer."""

from __future__ import annotations

import ipaddress
import ssl
from typing import Final
from urllib.parse import urlsplit

import aiohttp
import orjson

from mcp_bastion.errors import ConfigError

TIMEOUT_SECONDS: Final = 10.0


def check_url(url: str, allow_insecure_http: bool, what: str) -> str:
    """``url`` if it is https without credentials, or plain http to a loopback IP when allowed."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname and parts.username is None:
        return url
    if parts.scheme == "http" and allow_insecure_http and parts.hostname:
        try:
            if ipaddress.ip_address(parts.hostname).is_loopback:
                return url
        except ValueError:
            pass
    raise ConfigError(f"{what} {url!r}: must be https (plain http only to a loopback IP when allowed)")


def session(ssl_context: ssl.SSLContext | None) -> aiohttp.ClientSession:
    """A pooled client that ignores proxy variables (``trust_env`` off); the system trust store when
    ``ssl_context`` is None. Build it inside the running event loop."""
    connector = aiohttp.TCPConnector(ssl=ssl_context if ssl_context is not None else True, limit=16)
    return aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS), trust_env=False
    )


def json_answer(body: bytes, max_bytes: int) -> object:
    """The decoded JSON of ``body``; None when it is larger than ``max_bytes`` or not JSON."""
    if len(body) > max_bytes:
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
