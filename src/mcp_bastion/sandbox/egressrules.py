"""What a sandboxed server may reach through its egress proxy, compiled once at startup: the allow-list of
``host:port`` pairs and the limits on what one server can make the proxy hold. Pure: no sockets, no DNS.

Invariants:
- names are compared lower-case and without a trailing dot; ``*.suffix`` matches any depth below the
  suffix, never the suffix itself;
- IP literals are accepted only in ``netguard``'s canonical form and match only the same address written
  as a literal (``93.184.215.14:443`` is not the name ``93.184.215.14``, ``[::ffff:127.0.0.1]`` is not
  ``127.0.0.1``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from mcp_bastion.errors import ConfigError
from mcp_bastion.netguard import Address, SSRFBlocked, parse_host


@dataclass(frozen=True, slots=True)
class EgressLimits:
    """Bounds on what one sandboxed server can make the proxy hold."""

    max_head_bytes: int = 16_384
    """Request line plus header fields."""
    max_headers: int = 100
    head_timeout: float = 10.0
    """Seconds a client has to send its whole request head (slowloris)."""
    connect_timeout: float = 10.0
    """Seconds for the DNS lookup and the TCP connect together."""
    idle_timeout: float = 300.0
    """Seconds a tunnel or request may pass with no byte moving either way."""
    max_connections: int = 64
    """Concurrent client connections (tunnels and requests in progress, heads being read)."""


@dataclass(frozen=True, slots=True)
class AllowList:
    """Compiled ``host:port`` entries: exact names, ``*.suffix`` names (any depth below the suffix, not the
    suffix itself) and IP literals (matched only by the same address written as a literal)."""

    names: frozenset[tuple[str, int]] = frozenset()
    suffixes: frozenset[tuple[str, int]] = frozenset()
    """``(".example.com", 443)`` for ``*.example.com:443``."""
    addresses: frozenset[tuple[Address, int]] = frozenset()

    @classmethod
    def parse(cls, entries: Sequence[str]) -> AllowList:
        """``ConfigError`` naming the entry when one is not ``host:port``."""
        names: set[tuple[str, int]] = set()
        suffixes: set[tuple[str, int]] = set()
        addresses: set[tuple[Address, int]] = set()
        for entry in entries:
            wildcard = entry.startswith("*.")
            target = split_authority(entry.removeprefix("*.") if wildcard else entry, default_port=None)
            host = None if target is None else normal_host(target[0])
            if target is None or host is None or (wildcard and not isinstance(host, str)):
                raise ConfigError(f"sandbox egress entry {entry!r}: expected host:port or *.domain:port")
            if isinstance(host, str):
                (suffixes if wildcard else names).add(("." + host if wildcard else host, target[1]))
            else:
                addresses.add((host, target[1]))
        return cls(frozenset(names), frozenset(suffixes), frozenset(addresses))

    def allows(self, host: Address | str, port: int) -> bool:
        """Is ``host`` (as ``normal_host`` normalises it) at ``port`` on the list?"""
        if not isinstance(host, str):
            return (host, port) in self.addresses
        return (host, port) in self.names or any(host.endswith(suffix) and p == port for suffix, p in self.suffixes)


_AUTHORITY: Final = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^\[\]:@/?#\s]+)(?::([0-9]{1,5}))?")


def split_authority(text: str, *, default_port: int | None) -> tuple[str, int] | None:
    """``(host, port)`` of ``host[:port]`` (IPv6 in brackets); None when malformed or the port is missing."""
    match = _AUTHORITY.fullmatch(text)
    if match is None or (match[2] is None and default_port is None):
        return None
    port = int(match[2]) if match[2] is not None else default_port
    return (match[1], port) if port is not None and 0 < port < 65536 else None


def normal_host(text: str) -> Address | str | None:
    """The address of a canonical IP literal, or the lower-case name without a trailing dot; None if
    ``netguard.parse_host`` refuses it."""
    try:
        return normalised(text)
    except SSRFBlocked:
        return None


def normalised(text: str) -> Address | str:
    """``normal_host``, raising ``netguard.SSRFBlocked`` (with its reason) for a host it refuses."""
    parsed = parse_host(text)
    return parsed.removesuffix(".") if isinstance(parsed, str) else parsed
