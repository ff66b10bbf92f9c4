"""TLS facts in ``scope["extensions"]["tls"]`` on both protocols, and ``peer_identity``."""

from __future__ import annotations

import http.client
import json
import ssl
from typing import Any

import pytest

from mcp_bastion.tls.certs import LocalPKI
from mcp_bastion.tls.context import server_context
from mcp_bastion.tls.peercert import TLSInfo, peer_identity, scope_tls

from .support import FLAVOURS, IO_TIMEOUT, ClientCA, Flavour, client_context, running_server


@pytest.mark.parametrize(
    ("common_name", "uri", "expected"),
    [
        pytest.param("alice", "spiffe://example.org/alice", "spiffe://example.org/alice", id="uri-wins-over-cn"),
        pytest.param("alice", None, "alice", id="cn"),
        pytest.param(None, "urn:example:bob", "urn:example:bob", id="uri-only"),
    ],
)
def test_peer_identity(client_ca: ClientCA, common_name: str | None, uri: str | None, expected: str) -> None:
    issued = client_ca.issue("peer", common_name=common_name, uri=uri)

    assert peer_identity(issued.der) == expected


def test_peer_identity_without_uri_or_cn_is_refused(client_ca: ClientCA) -> None:
    # Only a DNS name: a host, not a principal.
    issued = client_ca.issue("dns-only", common_name=None, dns="laptop.example.org")

    with pytest.raises(ValueError, match="neither"):
        peer_identity(issued.der)


def test_peer_identity_of_garbage_is_refused() -> None:
    with pytest.raises(ValueError, match="asn1"):
        peer_identity(b"\x30\x03\x02\x01\x00")


def test_scope_tls() -> None:
    info = TLSInfo(version="TLSv1.3", cipher="TLS_AES_128_GCM_SHA256", client_cert_der=None)

    assert scope_tls({"extensions": {"tls": info}}) == info
    assert scope_tls({"extensions": {}}) is None
    assert scope_tls({}) is None


def _get_twice(port: int, ctx: ssl.SSLContext) -> list[Any]:
    """Two requests on one keep-alive connection."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=IO_TIMEOUT)
    answers = []
    try:
        for _ in range(2):
            conn.request("GET", "/")
            response = conn.getresponse()
            assert response.status == 200
            answers.append(json.loads(response.read()))
    finally:
        conn.close()
    return answers


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_every_request_on_a_connection_carries_tls_facts(pki: LocalPKI, client_ca: ClientCA, flavour: Flavour) -> None:
    issued = client_ca.issue("client", common_name="alice@example.com")
    server = server_context(pki.server_cert, pki.server_key, client_ca=client_ca.cert_path)

    with running_server(server, flavour=flavour) as port:
        tls13 = _get_twice(port, client_context(pki.ca_cert, cert=issued))
        tls12 = _get_twice(port, client_context(pki.ca_cert, maximum_version=ssl.TLSVersion.TLSv1_2))

    for answer in tls13:
        assert answer["tls"]["version"] == "TLSv1.3"
        assert answer["tls"]["cipher"].startswith("TLS_")
        assert bytes.fromhex(answer["tls"]["client_cert_der"]) == issued.der
    for answer in tls12:
        assert answer["tls"]["version"] == "TLSv1.2"
        assert answer["tls"]["cipher"].startswith("ECDHE-ECDSA-")
        assert answer["tls"]["client_cert_der"] is None


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_plain_http_has_no_tls_facts(flavour: Flavour) -> None:
    with running_server(None, flavour=flavour) as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=IO_TIMEOUT)
        try:
            conn.request("GET", "/")
            answer = json.loads(conn.getresponse().read())
        finally:
            conn.close()

    assert answer["tls"] is None
