"""One request to the egress proxy, sans I/O (``sandbox/egressrequest.py``): bytes fed to the head parser,
the decision and the origin's head, the target noted for the audit record, and how a refusal is answered.
The same paths through a real proxy and real sockets are in ``test_egress.py``."""

from __future__ import annotations

from dataclasses import dataclass

import httptools
import pytest

from mcp_bastion.sandbox.egressrequest import Plan, Refused, Request, decide, refusal_response
from mcp_bastion.sandbox.egressrules import AllowList, EgressLimits

ALLOW = AllowList.parse(["origin.test:80", "origin.test:443", "*.api.test:443"])


@dataclass
class Notes:
    host: str | None = None
    port: int | None = None


def parsed(raw: bytes, limits: EgressLimits | None = None) -> tuple[Request, bytes | None]:
    """``raw`` fed to a ``Request`` in one piece, as the proxy does with one read."""
    request = Request(limits or EgressLimits())
    return request, request.feed(raw)


def decided(raw: bytes) -> tuple[Plan, Notes]:
    notes = Notes()
    return decide(*parsed(raw), ALLOW, notes), notes


def refused(raw: bytes) -> tuple[Refused, Notes]:
    notes = Notes()
    with pytest.raises(Refused) as caught:
        decide(*parsed(raw), ALLOW, notes)
    return caught.value, notes


def test_connect_is_a_tunnel_carrying_the_bytes_sent_with_its_head() -> None:
    plan, notes = decided(b"CONNECT X.API.test.:443 HTTP/1.1\r\nHost: x.api.test:443\r\n\r\n\x16\x03\x01")
    assert plan == Plan("x.api.test", 443, b"\x16\x03\x01", tunnel=True)
    assert (notes.host, notes.port) == ("x.api.test", 443)


def test_plain_request_head_for_the_origin() -> None:
    plan, notes = decided(
        b"POST http://origin.test/a?b=1 HTTP/1.1\r\nHost: origin.test:80\r\nProxy-Authorization: Basic eA==\r\n"
        b"Connection: keep-alive, X-Hop\r\nX-Hop: 1\r\nX-Keep: 2\r\nContent-Length: 2\r\n\r\nhi"
    )
    assert plan == Plan(
        "origin.test",
        80,
        b"POST /a?b=1 HTTP/1.1\r\nX-Keep: 2\r\nHost: origin.test\r\nContent-Length: 2\r\nConnection: close\r\n\r\n",
        tunnel=False,
    )
    assert (notes.host, notes.port) == ("origin.test", 80)


def test_chunked_body_is_reframed_by_the_proxy() -> None:
    plan, _ = decided(b"POST http://origin.test HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert plan.chunked
    assert plan.first.startswith(b"POST / HTTP/1.1\r\n")
    assert plan.first.endswith(b"\r\nHost: origin.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")


@pytest.mark.parametrize(
    ("raw", "status", "reason", "noted"),
    [
        pytest.param(b"CONNECT evil.test:443 HTTP/1.1\r\n\r\n", 403, "host_not_allowed", ("evil.test", 443)),
        pytest.param(b"CONNECT API.test:443 HTTP/1.1\r\n\r\n", 403, "host_not_allowed", ("api.test", 443)),
        pytest.param(b"CONNECT 127.1:80 HTTP/1.1\r\n\r\n", 403, "ip_literal_noncanonical", ("127.1", 80)),
        pytest.param(b"CONNECT origin.test HTTP/1.1\r\n\r\n", 400, "bad_request", (None, None), id="no-port"),
        pytest.param(b"GET /x HTTP/1.1\r\nHost: origin.test\r\n\r\n", 400, "bad_request", (None, None)),
        pytest.param(b"GET ftp://origin.test/ HTTP/1.1\r\n\r\n", 403, "scheme_not_supported", (None, None)),
        pytest.param(
            b"GET http://origin.test/ HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            403,
            "upgrade_not_supported",
            (None, None),
            id="upgrade",
        ),
        pytest.param(
            b"GET http://origin.test/ HTTP/1.1\r\nHost: origin.test:8080\r\n\r\n",
            403,
            "host_header_mismatch",
            ("origin.test", 80),
            id="host-mismatch",
        ),
        pytest.param(
            b"POST http://origin.test/ HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
            "bad_request",
            ("origin.test", 80),
            id="chunked-on-1.0",
        ),
    ],
)
def test_refusals_note_the_target_once_known(
    raw: bytes, status: int, reason: str, noted: tuple[str | None, int | None]
) -> None:
    refusal, notes = refused(raw)
    assert (refusal.status, refusal.reason) == (status, reason)
    assert (notes.host, notes.port) == noted


def test_only_the_first_request_is_parsed() -> None:
    request, early = parsed(
        b"POST http://origin.test/1 HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi"
        b"GET http://evil.test/2 HTTP/1.1\r\nHost: evil.test\r\nX-Second: 1\r\n\r\n"
    )
    assert early is None
    assert (request.method, bytes(request.url), request.body) == ("POST", b"http://origin.test/1", [b"hi"])
    assert request.headers == [(b"Content-Length", b"2")]
    assert request.complete
    assert request.pipelined


FIRST = b"POST http://origin.test/1 HTTP/1.1\r\nContent-Length: 2\r\n\r\n"


@pytest.mark.parametrize(
    "pieces",
    [
        pytest.param([FIRST + b"hi", b"CONNECT evil.test:443 HTTP/1.1\r\n\r\n"], id="connect-later"),
        pytest.param([FIRST, b"hiCONNECT evil.test:443 HTTP/1.1\r\n\r\n"], id="connect-with-the-body"),
        pytest.param([FIRST + b"hiGET http://x/ HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: ws\r\n\r\n"], id="upgrade"),
        pytest.param([FIRST + b"hi\x16\x03\x01"], id="garbage"),
        pytest.param([FIRST.replace(b"1.1", b"1.0") + b"hiGET http://x/ HTTP/1.1\r\n\r\n"], id="after-http-1.0"),
        pytest.param([FIRST.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n") + b"hiGET "], id="after-close"),
    ],
)
def test_what_follows_the_first_request_is_noted_and_not_parsed(pieces: list[bytes]) -> None:
    request = Request(EgressLimits())
    assert [request.feed(piece) for piece in pieces] == [None] * len(pieces)
    assert (request.method, bytes(request.url), b"".join(request.body)) == ("POST", b"http://origin.test/1", b"hi")
    assert request.complete
    assert request.pipelined
    assert request.feed(b"GET http://evil.test/ HTTP/1.1\r\n\r\n") is None  # and nothing more is parsed


def test_a_lone_request_is_not_pipelined_and_its_own_errors_raise() -> None:
    request, early = parsed(FIRST + b"hi\r\n\r\n")  # blank lines between requests are not a request
    assert (early, request.complete, request.pipelined) == (None, True, False)
    upgrade, early = parsed(b"GET http://x/ HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: ws\r\n\r\nframe")
    assert (early, upgrade.pipelined) == (b"frame", False)
    broken = Request(EgressLimits())
    broken.feed(b"POST http://x/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
    with pytest.raises(httptools.HttpParserError):
        broken.feed(b"zz\r\n")
    assert not broken.pipelined


@pytest.mark.parametrize(
    ("raw", "limits"),
    [
        pytest.param(b"GET http://a/ HTTP/1.1\r\n" + b"X: a\r\n" * 3 + b"\r\n", EgressLimits(max_headers=2)),
        pytest.param(b"GET http://a/ HTTP/1.1\r\nX: " + b"a" * 64 + b"\r\n\r\n", EgressLimits(max_head_bytes=64)),
    ],
)
def test_head_limits(raw: bytes, limits: EgressLimits) -> None:
    request, _ = parsed(raw, limits)
    assert request.too_large


@pytest.mark.parametrize(
    ("refusal", "error"),
    [
        pytest.param(Refused(403, "host_not_allowed"), "http_request_denied"),
        pytest.param(Refused(403, "address_metadata", "169.254.169.254"), "destination_ip_prohibited"),
        pytest.param(Refused(502, "resolve_failed"), "dns_error"),
        pytest.param(Refused(502, "connect_failed"), "connection_refused"),
        pytest.param(Refused(504, "connect_timeout"), "connection_timeout"),
        pytest.param(Refused(503, "too_many_connections"), "connection_limit_reached"),
        pytest.param(Refused(431, "headers_too_large"), "http_request_error"),
    ],
)
def test_refusal_response(refusal: Refused, error: str) -> None:
    response = refusal_response(refusal)
    head, body = response.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 %d " % refusal.status)
    assert f'Proxy-Status: mcp-bastion; error={error}; details="{refusal.reason}"'.encode() in head
    assert b"Connection: close" in head
    assert b"Content-Length: %d" % len(body) in head
    assert body.endswith(refusal.reason.encode() + b"\n")
    if refusal.detail:
        assert refusal.detail.encode() not in response  # where a name points is for the audit record only
