"""SSRF guard: which addresses the gateway may connect to on someone else's say-so, and an aiohttp resolver
that enforces it on every connection.

Used wherever a host comes from outside: client ID metadata documents
(draft-ietf-oauth-client-id-metadata-document §6.5: no special-use addresses, RFC 6890), the ``url``
argument sink (issue 7) and the sandbox egress proxy (issue 8). Address registries: RFC 6890 (special
purpose), RFC 1918 and RFC 4193 (private), RFC 3927 and RFC 4291 §2.5.6 (link-local), RFC 6598 (shared
CGNAT space), RFC 5737, RFC 3849 and RFC 9637 (documentation), RFC 4291 §2.5.5.2 (IPv4-mapped), RFC 6052
§2.1 (NAT64 well-known prefix), RFC 3056 (6to4).

Invariants:
- an address is refused unless it is public or the policy allows its class; a name is refused if ANY of
  its addresses is refused (a name resolving to both public and private addresses is a DNS trick, and
  which one a connection would use is not ours to predict);
- the caller connects to the addresses ``check_host`` vetted and never resolves the name again: the second
  lookup is where DNS rebinding swaps in 127.0.0.1. The original name stays for SNI and ``Host``;
- IP literals are accepted only in canonical form (dotted quad; RFC 4291 text without a zone):
  ``2130706433``, ``0x7f.1``, ``0177.0.0.1``, ``127.1`` are 127.0.0.1 to ``inet_aton`` but not to a
  reader, and a guard that disagrees with the socket layer about an address guards nothing;
- a cloud metadata address is opened only by an ``allowed_networks`` entry containing it, never by
  ``allow_private`` or ``allowed_hosts``: it hands out the machine's credentials;
- ``GuardedResolver`` checks names when aiohttp resolves them and, because aiohttp never asks a resolver
  about IP literals, every address again in the socket factory, just before ``connect()``.

Resolution failures are ``OSError`` (``socket.gaierror``, ``TimeoutError``), as from the socket layer;
``SSRFBlocked`` means the guard refused.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

AddressClass = Literal[
    "loopback",
    "private",
    "link_local",
    "metadata",
    "cgnat",
    "unspecified",
    "multicast",
    "reserved",
    "ipv4_mapped",
    "documentation",
]
"""Why an address is not public (``classify``)."""
BlockReason = AddressClass | Literal["host_malformed", "ip_literal_noncanonical"]
"""``SSRFBlocked.reason``: an address class, or a host we refuse to interpret."""

RESOLVE_TIMEOUT: Final = 5.0
"""Seconds a DNS lookup may take before ``check_host`` gives up (``TimeoutError``)."""
MAX_HOST_LENGTH: Final = 253

METADATA_ADDRESSES: Final[frozenset[Address]] = frozenset(
    ipaddress.ip_address(text)
    for text in (
        "169.254.169.254",  # AWS, GCP, Azure, OCI, DigitalOcean, OpenStack instance metadata
        "169.254.170.2",  # AWS ECS task metadata and credentials
        "169.254.170.23",  # AWS EKS Pod Identity agent
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud (classic)
        "fd00:ec2::254",  # AWS instance metadata over IPv6
        "fd00:ec2::23",  # AWS EKS Pod Identity agent over IPv6
    )
)


def _v4(text: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(text)


def _v6(text: str) -> ipaddress.IPv6Network:
    return ipaddress.IPv6Network(text)


# First match wins; metadata is checked before these tables.
_IPV4_CLASSES: Final[tuple[tuple[ipaddress.IPv4Network, AddressClass], ...]] = (
    (_v4("0.0.0.0/8"), "unspecified"),  # "this network": connect() to 0.0.0.0 reaches the local host
    (_v4("127.0.0.0/8"), "loopback"),
    (_v4("10.0.0.0/8"), "private"),
    (_v4("172.16.0.0/12"), "private"),
    (_v4("192.168.0.0/16"), "private"),
    (_v4("100.64.0.0/10"), "cgnat"),
    (_v4("169.254.0.0/16"), "link_local"),
    (_v4("192.0.0.0/24"), "reserved"),  # IETF protocol assignments
    (_v4("192.0.2.0/24"), "documentation"),
    (_v4("198.51.100.0/24"), "documentation"),
    (_v4("203.0.113.0/24"), "documentation"),
    (_v4("198.18.0.0/15"), "reserved"),  # benchmarking
    (_v4("192.88.99.0/24"), "reserved"),  # 6to4 relay anycast, deprecated
    (_v4("224.0.0.0/4"), "multicast"),
    (_v4("240.0.0.0/4"), "reserved"),  # includes the broadcast address
)
_IPV6_UNSPECIFIED: Final = ipaddress.IPv6Address("::")
_IPV6_LOOPBACK: Final = ipaddress.IPv6Address("::1")
_IPV6_CLASSES: Final[tuple[tuple[ipaddress.IPv6Network, AddressClass], ...]] = (
    (_v6("64:ff9b:1::/48"), "reserved"),  # local-use NAT64 (RFC 8215): translates to private space
    (_v6("2001:db8::/32"), "documentation"),
    (_v6("3fff::/20"), "documentation"),
    (_v6("2001::/23"), "reserved"),  # IETF protocol assignments: Teredo, benchmarking, ORCHID
    (_v6("fc00::/7"), "private"),
    (_v6("fec0::/10"), "private"),  # site-local, deprecated but still routed by some stacks
    (_v6("fe80::/10"), "link_local"),
    (_v6("ff00::/8"), "multicast"),
)
_GLOBAL_UNICAST: Final = _v6("2000::/3")
"""Everything else outside this block (IPv4-compatible, SIIT, discard-only, unassigned) is ``reserved``."""
_MAPPED: Final = _v6("::ffff:0:0/96")
_NAT64: Final = _v6("64:ff9b::/96")
_6TO4: Final = _v6("2002::/16")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a packet to ``address`` really goes to, for the forms that carry one."""
    if address in _MAPPED or address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _6TO4:
        return ipaddress.IPv4Address((int(address) >> 80) & 0xFFFFFFFF)
    return None


def classify(address: Address) -> AddressClass | None:
    """Why ``address`` must not be connected to on someone else's say-so, or None when it is public.

    An IPv6 address carrying an IPv4 one (mapped, NAT64, 6to4) is ``ipv4_mapped`` when the embedded
    address is not public (``metadata`` when it is a metadata address), else public like it.
    """
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        address = ipaddress.IPv6Address(int(address))  # the zone does not change what the address is
    if address in METADATA_ADDRESSES:
        return "metadata"
    if isinstance(address, ipaddress.IPv4Address):
        return next((reason for network, reason in _IPV4_CLASSES if address in network), None)
    if address == _IPV6_UNSPECIFIED:
        return "unspecified"
    if address == _IPV6_LOOPBACK:
        return "loopback"
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        inner = classify(embedded)
        return "metadata" if inner == "metadata" else None if inner is None else "ipv4_mapped"
    reason = next((reason for network, reason in _IPV6_CLASSES if address in network), None)
    if reason is None and address not in _GLOBAL_UNICAST:
        return "reserved"
    return reason


class SSRFBlocked(Exception):
    """The guard refused a host or address. ``reason`` is stable (audit records, tests); ``host`` and
    ``address`` are for the audit log, not for the party who supplied them."""

    def __init__(self, reason: BlockReason, host: str, address: Address | None = None) -> None:
        super().__init__(f"{host!r} refused: {reason}" + ("" if address is None else f" ({address})"))
        self.reason: BlockReason = reason
        self.host = host
        self.address = address


def _normalise_host(name: str) -> str:
    # "Internal.Example." is "internal.example"; "[::1]" (URL form) is "::1".
    name = name.lower().removesuffix(".")
    return name[1:-1] if name.startswith("[") and name.endswith("]") else name


@dataclass(frozen=True, slots=True)
class Policy:
    """Which non-public addresses are allowed anyway. The default allows none.

    - ``allow_loopback``: 127.0.0.0/8 and ::1 (tests, a sidecar on the same host);
    - ``allow_private``: RFC 1918, fc00::/7 and the CGNAT range 100.64.0.0/10 (internal services);
    - ``allowed_hosts``: names (or IP literals) trusted to resolve to internal addresses; every class but
      ``metadata`` is allowed for them;
    - ``allowed_networks``: addresses allowed whatever their class; the only way to open a metadata address.
    """

    allow_loopback: bool = False
    allow_private: bool = False
    allowed_hosts: frozenset[str] = frozenset()
    allowed_networks: tuple[Network, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed_hosts", frozenset(_normalise_host(host) for host in self.allowed_hosts))
        object.__setattr__(self, "allowed_networks", tuple(self.allowed_networks))

    def trusts(self, host: str) -> bool:
        """Is ``host`` one of ``allowed_hosts``?"""
        return _normalise_host(host) in self.allowed_hosts

    def refusal(self, address: Address, *, trusted_host: bool = False) -> AddressClass | None:
        """Why this policy refuses ``address`` (None: allowed). ``trusted_host``: it came from one of
        ``allowed_hosts``."""
        reason = classify(address)
        if reason is None or any(_contains(network, address) for network in self.allowed_networks):
            return None
        if reason == "metadata":
            return reason
        if trusted_host:
            return None
        if reason == "loopback" and self.allow_loopback:
            return None
        if reason in ("private", "cgnat") and self.allow_private:
            return None
        return reason


def _contains(network: Network, address: Address) -> bool:
    # Explicit version check: membership across versions is False, but say so rather than rely on it.
    return network.version == address.version and address in network


_LABEL: Final = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_NUMERIC_LABEL: Final = re.compile(r"[0-9]+|0x[0-9a-f]*")
_OCTET: Final = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_DOTTED_QUAD: Final = re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}")
_IPV6_TEXT: Final = re.compile(r"[0-9a-f:.]+")


def parse_host(host: str) -> Address | str:
    """The address of an IP literal, or the name (lower case, ASCII) to resolve; ``SSRFBlocked`` for a host
    we refuse to interpret. IPv6 literals may be bracketed (as in URLs). Pure: no DNS."""
    text = host.lower()
    if not text or len(text) > MAX_HOST_LENGTH + 1 or not text.isascii():
        raise SSRFBlocked("host_malformed", host)
    if text.startswith("[") != text.endswith("]"):
        raise SSRFBlocked("host_malformed", host)
    if text.startswith("[") or ":" in text:
        inner = text[1:-1] if text.startswith("[") else text
        # No zone ("%eth0"): it would name an interface, and only link-local addresses need one.
        if not _IPV6_TEXT.fullmatch(inner):
            raise SSRFBlocked("host_malformed", host)
        try:
            return ipaddress.IPv6Address(inner)
        except ValueError as exc:
            raise SSRFBlocked("host_malformed", host) from exc
    labels = text.removesuffix(".").split(".")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        # WHATWG URL and inet_aton read a host whose last label is a number as IPv4 (in decimal, octal or
        # hex, with parts missing): only the canonical dotted quad is allowed, so there is one reading.
        if not _DOTTED_QUAD.fullmatch(text):
            raise SSRFBlocked("ip_literal_noncanonical", host)
        return ipaddress.IPv4Address(text)
    if len(text.removesuffix(".")) > MAX_HOST_LENGTH or not all(_LABEL.fullmatch(label) for label in labels):
        raise SSRFBlocked("host_malformed", host)
    return text


@dataclass(frozen=True, slots=True)
class ResolvedAddress:
    """One vetted address of a host: connect to ``address``, and use ``hostname`` for SNI and ``Host``."""

    hostname: str
    address: Address
    port: int

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if self.address.version == 6 else socket.AF_INET


def check_address(address: Address, policy: Policy, *, host: str | None = None) -> None:
    """Raise ``SSRFBlocked`` unless ``policy`` allows connecting to ``address`` (reached via ``host``)."""
    reason = policy.refusal(address, trusted_host=host is not None and policy.trusts(host))
    if reason is not None:
        raise SSRFBlocked(reason, host if host is not None else str(address), address)


async def check_host(
    host: str,
    port: int,
    policy: Policy,
    *,
    family: int = socket.AF_UNSPEC,
    lookup_timeout: float = RESOLVE_TIMEOUT,
) -> list[ResolvedAddress]:
    """Resolve ``host`` and vet every address; return them all, or raise ``SSRFBlocked`` if any is refused.

    ``OSError`` when the name does not resolve (``TimeoutError`` after ``lookup_timeout`` seconds).
    """
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range: {port}")
    parsed = parse_host(host)
    if not isinstance(parsed, str):
        check_address(parsed, policy, host=host)
        return [ResolvedAddress(host, parsed, port)]
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(lookup_timeout):
        infos = await loop.getaddrinfo(parsed, port, family=family, type=socket.SOCK_STREAM)
    addresses: dict[Address, None] = {}
    for info_family, _, _, _, sockaddr in infos:
        if info_family in (socket.AF_INET, socket.AF_INET6):
            addresses[ipaddress.ip_address(sockaddr[0])] = None  # dict: de-duplicated, resolver order kept
    if not addresses:
        raise socket.gaierror(socket.EAI_NONAME, f"{host!r} has no IPv4 or IPv6 address")
    for address in addresses:
        check_address(address, policy, host=host)
    return [ResolvedAddress(host, address, port) for address in addresses]


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that only returns vetted addresses, and a socket factory that checks each address
    once more before aiohttp connects to it. Use both through ``connector``."""

    def __init__(self, policy: Policy, *, lookup_timeout: float = RESOLVE_TIMEOUT) -> None:
        self.policy: Final = policy
        self._lookup_timeout = lookup_timeout
        self._trusted: set[Address] = set()
        """Addresses allowed only because a name in ``allowed_hosts`` resolved to them. The socket factory sees
        no name, so it accepts these by address: for this resolver's lifetime, an address a trusted name led
        to is trusted (reaching it by IP literal reaches nothing the name did not)."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        vetted = await check_host(host, port, self.policy, family=family, lookup_timeout=self._lookup_timeout)
        results: list[ResolveResult] = []
        for item in vetted:
            if self.policy.refusal(item.address) is not None:
                self._trusted.add(item.address)
            results.append(
                {
                    "hostname": host,
                    "host": str(item.address),
                    "port": port,
                    "family": item.family,
                    "proto": socket.IPPROTO_TCP,
                    "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
                }
            )
        return results

    async def close(self) -> None:
        """Nothing to release: lookups run in the loop's default executor."""

    def socket_factory(self, addr_info: aiohttp.AddrInfoType) -> socket.socket:
        """The last gate: aiohttp passes IP-literal hosts straight to ``connect()`` without a resolver."""
        family, type_, proto, _, sockaddr = addr_info
        address = ipaddress.ip_address(sockaddr[0])
        if address not in self._trusted:
            check_address(address, self.policy, host=str(address))
        return socket.socket(family=family, type=type_, proto=proto)


def connector(
    policy: Policy, *, ssl_context: ssl.SSLContext | None = None, lookup_timeout: float = RESOLVE_TIMEOUT
) -> aiohttp.TCPConnector:
    """A ``TCPConnector`` whose every connection goes through the guard. Call it with a running loop.

    aiohttp's DNS cache is off (each connection is vetted as it is made, and the system resolver caches
    anyway); happy eyeballs is off so that ``SSRFBlocked`` from the socket factory reaches the caller as
    itself rather than folded into a combined connection error.
    """
    resolver = GuardedResolver(policy, lookup_timeout=lookup_timeout)
    return aiohttp.TCPConnector(
        resolver=resolver,
        socket_factory=resolver.socket_factory,
        use_dns_cache=False,
        happy_eyeballs_delay=None,
        ssl=ssl_context if ssl_context is not None else True,
    )


def networks(texts: Iterable[str]) -> tuple[Network, ...]:
    """Parse CIDR strings for ``Policy.allowed_networks`` (host bits must be zero)."""
    return tuple(ipaddress.ip_network(text, strict=True) for text in texts)
