"""One client request to the egress proxy, sans I/O: the head parsed (httptools callbacks), the decision
whether it may go out and what the origin is sent first (a ``Plan``), or a ``Refused`` and the answer that
renders it. The proxy (``egress``) feeds bytes in and does the DNS and the connecting; ``egressrelay`` moves
the bytes of an allowed request.

Invariants:
- the decision reads only the client's bytes and the allow-list: no DNS here, so a name that is not
  listed is never resolved;
- a connection carries one request: parsing stops where a second one (pipelined, smuggled, or any other
  bytes after the first request's end) would begin, so none of it reaches the origin, whatever the reads
  it arrives in; the first request goes out whole and the proxy closes after its answer (``pipelined``
  notes, for the audit record, that something followed);
- a plain request's head for the origin carries the client's Host (which must agree with the URL), no
  ``Proxy-Authorization`` or hop-by-hop fields (RFC 9110 §7.6.1), and framing set by the proxy.

Refusals are answered with a short reason in the body and an RFC 9209 ``Proxy-Status`` field; they are
the proxy's own and never reach the gate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from http import HTTPStatus
from typing import Final, Protocol

import httptools

from mcp_bastion.netguard import Address, SSRFBlocked
from mcp_bastion.sandbox.egressrules import AllowList, EgressLimits, normal_host, normalised, split_authority


class Refused(Exception):
    """The proxy refuses: answer ``status`` with ``reason`` and close."""

    def __init__(self, status: int, reason: str, detail: str = "", *, address: Address | None = None) -> None:
        super().__init__(detail or reason)
        self.status = status
        self.reason = reason
        self.detail = detail
        self.address = address


_PROXY_STATUS: Final = {
    400: "http_request_error",
    408: "http_request_error",
    431: "http_request_error",
    503: "connection_limit_reached",
    504: "connection_timeout",
}
"""RFC 9209 §2.3 error types; 403 is ``http_request_denied`` or ``destination_ip_prohibited``."""


def refusal_response(refused: Refused) -> bytes:
    """The whole answer to a refused request, ``Connection: close`` (the proxy closes after it)."""
    if refused.reason.startswith("address_"):
        error = "destination_ip_prohibited"
    elif refused.reason == "resolve_failed":
        error = "dns_error"
    elif refused.reason == "connect_failed":
        error = "connection_refused"
    else:
        error = _PROXY_STATUS.get(refused.status, "http_request_denied")
    phrase = HTTPStatus(refused.status).phrase
    body = f"{refused.status} {phrase}: {refused.reason}\n".encode()
    return (
        f"HTTP/1.1 {refused.status} {phrase}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
        f'Proxy-Status: mcp-bastion; error={error}; details="{refused.reason}"\r\nConnection: close\r\n\r\n'
    ).encode() + body


class _SecondRequest(Exception):
    """Raised by a callback to stop the parser where a second request begins."""


class Request:
    """httptools callbacks for the first request on a connection; ``feed`` stops at the end of it."""

    def __init__(self, limits: EgressLimits) -> None:
        self._limits = limits
        self.parser = httptools.HttpRequestParser(self)
        self.method = ""
        self.version = ""
        self.url = bytearray()
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_size = 0
        self.too_large = False
        self.head_done = False
        self.complete = False
        self.body: list[bytes] = []
        self.pipelined = False
        """Bytes followed the first request's end (a second request, or anything but blank lines)."""
        self._begun = False

    def feed(self, data: bytes) -> bytes | None:
        """Parse the client's next bytes; what follows the head when the first request asks for a tunnel
        or an upgrade (None: it does not). Bytes after the first request's end are not parsed.
        ``httptools.HttpParserError`` when the first request is malformed."""
        if self.pipelined:
            return None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:  # the first request's: parsing never gets to a later one
            return data[exc.args[0] :]
        except httptools.HttpParserError:
            if not self.complete:
                raise
            # After the first request: ``_SecondRequest``, or llhttp refusing any byte after a request
            # that ends its connection (``Connection: close``, HTTP/1.0).
            self.pipelined = True
        return None

    def on_message_begin(self) -> None:
        if self._begun:
            self.pipelined = True
            raise _SecondRequest  # httptools stops parsing, so a later head or body reaches no callback
        self._begun = True

    def on_url(self, url: bytes) -> None:
        self._grow(len(url))
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._grow(len(name) + len(value) + 4)
        if not self.too_large:
            self.headers.append((name, value))
            self.too_large = len(self.headers) > self._limits.max_headers

    def _grow(self, size: int) -> None:
        self.head_size += size
        self.too_large = self.too_large or self.head_size > self._limits.max_head_bytes

    def on_headers_complete(self) -> None:
        self.method = self.parser.get_method().decode("ascii", "replace")
        self.version = self.parser.get_http_version()
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True

    def values(self, name: bytes) -> list[bytes]:
        return [value for key, value in self.headers if key.lower() == name]


@dataclass(frozen=True, slots=True)
class Plan:
    """An allowed request: the origin, the bytes to send it first, and how to carry the rest."""

    host: Address | str
    port: int
    first: bytes
    """A CONNECT's bytes that came with its head, or a plain request's head for the origin."""
    tunnel: bool
    chunked: bool = False


class Noted(Protocol):
    """Where ``decide`` notes the target as soon as it knows it, so that the audit record of a refusal
    still names what was asked for (the proxy's record of the connection)."""

    host: str | None
    port: int | None


_ABSOLUTE: Final = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)([^#]*)")
_HOP_BY_HOP: Final = frozenset(
    b"connection keep-alive proxy-connection proxy-authorization proxy-authenticate te trailer upgrade "
    b"transfer-encoding content-length host".split()
)
"""Not passed to the origin: hop-by-hop fields (RFC 9110 §7.6.1), the proxy's own credentials, and the
fields the proxy sets itself (``Host``, framing)."""


def decide(request: Request, early: bytes | None, allow: AllowList, noted: Noted) -> Plan:
    """Where to connect and what to send first, if this request may go out at all (no DNS yet); ``early``
    is what came after a CONNECT or upgrade head (None: not one)."""
    url = request.url.decode("ascii", "replace")
    if request.method == "CONNECT":
        target = split_authority(url, default_port=None)
        if target is None:
            raise Refused(400, "bad_request", f"CONNECT target is not host:port: {url[:200]!r}")
        host, port = _check_target(allow, noted, *target)
        return Plan(host, port, early or b"", tunnel=True)
    if early is not None:
        raise Refused(403, "upgrade_not_supported", "Connection: upgrade outside CONNECT")
    absolute = _ABSOLUTE.fullmatch(url)
    if absolute is None:
        raise Refused(400, "bad_request", "proxy requests need an absolute-form URL")
    if absolute[1].lower() != "http":
        raise Refused(403, "scheme_not_supported", f"{absolute[1]!r}: only http (https goes through CONNECT)")
    target = split_authority(absolute[2], default_port=80)
    if target is None:
        raise Refused(400, "bad_request", f"bad authority in URL: {absolute[2][:200]!r}")
    host, port = _check_target(allow, noted, *target)
    head, chunked = origin_head(request, absolute[2], absolute[3], (host, port))
    return Plan(host, port, head, tunnel=False, chunked=chunked)


def _check_target(allow: AllowList, noted: Noted, text: str, port: int) -> tuple[Address | str, int]:
    """The normalised host, if the allow-list names it at ``port``; no DNS."""
    noted.host, noted.port = text[:255], port
    try:
        host = normalised(text)
    except SSRFBlocked as exc:
        raise Refused(403, exc.reason) from exc
    noted.host = str(host)
    if not allow.allows(host, port):
        raise Refused(403, "host_not_allowed")
    return host, port


def origin_head(request: Request, authority: str, path: str, target: tuple[Address | str, int]) -> tuple[bytes, bool]:
    """The head sent to the origin for a plain request to ``target``, and whether the body is chunked."""
    hosts = request.values(b"host")
    if len(hosts) > 1:
        raise Refused(400, "bad_request", "more than one Host field")
    if hosts:
        said = split_authority(hosts[0].decode("latin-1"), default_port=80)
        if said is None or (normal_host(said[0]), said[1]) != target:
            raise Refused(403, "host_header_mismatch", f"Host {hosts[0][:200]!r} for {authority!r}")
    version = request.version
    encodings = request.values(b"transfer-encoding")
    lengths = request.values(b"content-length")
    chunked = bool(encodings)
    if chunked and (version != "1.1" or [e.strip().lower() for e in encodings] != [b"chunked"]):
        raise Refused(400, "bad_request", "only Transfer-Encoding: chunked on HTTP/1.1")
    if len(lengths) > 1:
        raise Refused(400, "bad_request", "more than one Content-Length field")
    dropped = set(_HOP_BY_HOP)
    for value in request.values(b"connection"):
        dropped.update(token.strip().lower() for token in value.split(b","))
    lines = [f"{request.method} {path if path.startswith('/') else '/' + path} HTTP/{version}".encode()]
    lines += [name + b": " + value for name, value in request.headers if name.lower() not in dropped]
    lines.append(b"Host: " + authority.encode("ascii"))
    if chunked:
        lines.append(b"Transfer-Encoding: chunked")
    elif lengths:
        lines.append(b"Content-Length: " + lengths[0].strip())
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n", chunked
