"""The server and upstream contexts: their settings, and handshakes against a real uvicorn listener."""

from __future__ import annotations

import socket
import ssl
import warnings
from pathlib import Path

import pytest

from mcp_bastion.errors import ConfigError
from mcp_bastion.tls.certs import LocalPKI, ensure_local_pki
from mcp_bastion.tls.context import server_context, upstream_context
from mcp_bastion.tls.peercert import peer_identity

from .support import (
    FLAVOURS,
    IO_TIMEOUT,
    ClientCA,
    Flavour,
    client_context,
    get_json,
    read_until_closed,
    refused,
    running_server,
)

# --- settings of the contexts -------------------------------------------------------------------------


def test_server_context_settings(pki: LocalPKI) -> None:
    ctx = server_context(pki.server_cert, pki.server_key)

    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_NO_COMPRESSION
    assert ctx.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    assert ctx.options & ssl.OP_NO_RENEGOTIATION
    assert ctx.verify_mode == ssl.CERT_NONE


def test_tls12_suites_are_forward_secret_aead_only(pki: LocalPKI) -> None:
    for ctx in (
        server_context(pki.server_cert, pki.server_key),
        upstream_context(ca_bundle=pki.ca_cert, client_cert=None, client_key=None),
    ):
        tls12 = [c for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"]
        assert tls12
        for cipher in tls12:
            assert cipher["aead"], cipher["name"]
            assert cipher["kea"] == "kx-ecdhe", cipher["name"]
            assert cipher["auth"] in ("auth-ecdsa", "auth-rsa"), cipher["name"]


@pytest.mark.parametrize(
    ("require", "expected"),
    [pytest.param(False, ssl.CERT_OPTIONAL, id="optional"), pytest.param(True, ssl.CERT_REQUIRED, id="required")],
)
def test_server_context_with_client_ca(
    pki: LocalPKI, client_ca: ClientCA, require: bool, expected: ssl.VerifyMode
) -> None:
    ctx = server_context(pki.server_cert, pki.server_key, client_ca=client_ca.cert_path, require_client_cert=require)

    assert ctx.verify_mode == expected
    assert ctx.cert_store_stats()["x509_ca"] == 1


def test_required_client_cert_without_ca_is_a_config_error(pki: LocalPKI) -> None:
    with pytest.raises(ConfigError):
        server_context(pki.server_cert, pki.server_key, require_client_cert=True)


def test_unreadable_files_are_config_errors(pki: LocalPKI, tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        server_context(tmp_path / "missing.crt", pki.server_key)
    with pytest.raises(ConfigError):
        server_context(pki.server_cert, pki.ca_cert.with_name("ca.key"))  # key of another certificate
    with pytest.raises(ConfigError):
        upstream_context(ca_bundle=tmp_path / "missing.pem", client_cert=None, client_key=None)
    with pytest.raises(ConfigError):
        upstream_context(ca_bundle=None, client_cert=None, client_key=pki.server_key)


def test_unknown_minimum_version_is_a_config_error(pki: LocalPKI) -> None:
    with pytest.raises(ConfigError):
        server_context(pki.server_cert, pki.server_key, minimum_version="1.1")  # type: ignore[arg-type]


def test_upstream_context_settings(pki: LocalPKI) -> None:
    pinned = upstream_context(ca_bundle=pki.ca_cert, client_cert=None, client_key=None)
    system = upstream_context(ca_bundle=None, client_cert=None, client_key=None, minimum_version="1.3")

    for ctx in (pinned, system):
        assert ctx.verify_mode == ssl.CERT_REQUIRED
        assert ctx.check_hostname
        assert ctx.verify_flags & ssl.VERIFY_X509_STRICT
    assert pinned.minimum_version == ssl.TLSVersion.TLSv1_2
    assert system.minimum_version == ssl.TLSVersion.TLSv1_3
    # A pinned bundle replaces the system store instead of adding to it.
    assert pinned.cert_store_stats()["x509_ca"] == 1


# --- handshakes against the real listener -------------------------------------------------------------


@pytest.mark.parametrize(
    ("maximum", "version"),
    [
        pytest.param(ssl.TLSVersion.TLSv1_3, "TLSv1.3", id="tls1.3"),
        pytest.param(ssl.TLSVersion.TLSv1_2, "TLSv1.2", id="tls1.2"),
    ],
)
def test_modern_clients_are_served(pki: LocalPKI, maximum: ssl.TLSVersion, version: str) -> None:
    with running_server(server_context(pki.server_cert, pki.server_key)) as port:
        # By IP (the IP SAN) and by name.
        by_ip = get_json(port, client_context(pki.ca_cert, maximum_version=maximum))
        by_name = get_json(port, client_context(pki.ca_cert, maximum_version=maximum), host="localhost")

    for answer in (by_ip, by_name):
        assert answer["tls"]["version"] == version
        assert answer["tls"]["client_cert_der"] is None


def assert_server_refused(exc: BaseException, alert: str) -> None:
    """The handshake failed at the server, not in the local client.

    uvloop and asyncio abort the transport of a failed handshake without flushing OpenSSL's alert, so
    the client usually sees EOF instead of the alert. A client that refused by itself would fail with
    NO_PROTOCOLS_AVAILABLE or NO_CIPHERS_AVAILABLE before sending anything.
    """
    assert isinstance(exc, ssl.SSLError)
    assert exc.reason in (alert, "UNEXPECTED_EOF_WHILE_READING")


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_tls11_client_is_refused_by_the_server(pki: LocalPKI, flavour: Flavour) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # ssl.TLSVersion.TLSv1_1 is deprecated
        ctx = client_context(pki.ca_cert, maximum_version=ssl.TLSVersion.TLSv1_1)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
    # Security level 0 lets the local OpenSSL offer TLS 1.1 at all, so it is the server that refuses.
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")

    with running_server(server_context(pki.server_cert, pki.server_key), flavour=flavour) as port:
        exc = refused(port, ctx)

    assert_server_refused(exc, "TLSV1_ALERT_PROTOCOL_VERSION")


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_tls12_client_is_refused_when_minimum_is_13(pki: LocalPKI, flavour: Flavour) -> None:
    ctx = client_context(pki.ca_cert, maximum_version=ssl.TLSVersion.TLSv1_2)

    with running_server(
        server_context(pki.server_cert, pki.server_key, minimum_version="1.3"), flavour=flavour
    ) as port:
        exc = refused(port, ctx)

    assert_server_refused(exc, "TLSV1_ALERT_PROTOCOL_VERSION")


@pytest.mark.parametrize(
    "ciphers",
    [
        pytest.param("ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384", id="cbc-sha2"),
        pytest.param("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA", id="cbc-sha1"),
    ],
)
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_tls12_non_aead_client_is_refused(pki: LocalPKI, ciphers: str, flavour: Flavour) -> None:
    ctx = client_context(pki.ca_cert, maximum_version=ssl.TLSVersion.TLSv1_2, ciphers=ciphers)

    with running_server(server_context(pki.server_cert, pki.server_key), flavour=flavour) as port:
        exc = refused(port, ctx)

    assert_server_refused(exc, "SSLV3_ALERT_HANDSHAKE_FAILURE")


def test_plain_http_to_the_tls_port_gets_no_http_answer(pki: LocalPKI) -> None:
    server = server_context(pki.server_cert, pki.server_key)

    with running_server(server) as port, socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        answer = read_until_closed(sock)

    assert not answer.startswith(b"HTTP/")
    assert b"echo" not in answer


# --- client certificates ------------------------------------------------------------------------------


def _mtls(pki: LocalPKI, client_ca: ClientCA, *, require: bool) -> ssl.SSLContext:
    return server_context(pki.server_cert, pki.server_key, client_ca=client_ca.cert_path, require_client_cert=require)


@pytest.mark.parametrize(
    ("common_name", "uri", "identity"),
    [
        pytest.param("alice@example.com", None, "alice@example.com", id="subject-cn"),
        pytest.param(
            "ci-runner", "spiffe://example.org/ns/ci/sa/runner", "spiffe://example.org/ns/ci/sa/runner", id="san-uri"
        ),
        pytest.param(None, "spiffe://example.org/agent", "spiffe://example.org/agent", id="san-uri-only"),
    ],
)
@pytest.mark.parametrize("maximum", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2], ids=["tls1.3", "tls1.2"])
def test_client_cert_from_configured_ca_is_accepted(
    pki: LocalPKI,
    client_ca: ClientCA,
    common_name: str | None,
    uri: str | None,
    identity: str,
    maximum: ssl.TLSVersion,
) -> None:
    issued = client_ca.issue("client", common_name=common_name, uri=uri)
    ctx = client_context(pki.ca_cert, cert=issued, maximum_version=maximum)

    with running_server(_mtls(pki, client_ca, require=True)) as port:
        answer = get_json(port, ctx)

    der = bytes.fromhex(answer["tls"]["client_cert_der"])
    assert der == issued.der
    assert peer_identity(der) == identity


@pytest.mark.parametrize("require", [True, False], ids=["required", "optional"])
@pytest.mark.parametrize("maximum", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2], ids=["tls1.3", "tls1.2"])
def test_client_cert_from_another_ca_is_refused(
    pki: LocalPKI, client_ca: ClientCA, foreign_ca: ClientCA, require: bool, maximum: ssl.TLSVersion
) -> None:
    # Optional client auth still refuses a certificate that does not verify: no silent downgrade.
    ctx = client_context(
        pki.ca_cert, cert=foreign_ca.issue("mallory", common_name="alice@example.com"), maximum_version=maximum
    )

    with running_server(_mtls(pki, client_ca, require=require)) as port:
        refused(port, ctx)


@pytest.mark.parametrize("maximum", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2], ids=["tls1.3", "tls1.2"])
def test_no_client_cert_is_refused_when_required(pki: LocalPKI, client_ca: ClientCA, maximum: ssl.TLSVersion) -> None:
    with running_server(_mtls(pki, client_ca, require=True)) as port:
        refused(port, client_context(pki.ca_cert, maximum_version=maximum))


def test_no_client_cert_is_served_when_optional(pki: LocalPKI, client_ca: ClientCA) -> None:
    with running_server(_mtls(pki, client_ca, require=False)) as port:
        answer = get_json(port, client_context(pki.ca_cert))

    assert answer["tls"]["client_cert_der"] is None


# --- the upstream context against a real server -------------------------------------------------------


def test_upstream_context_verifies_pins_and_presents_a_client_cert(
    pki: LocalPKI, client_ca: ClientCA, tmp_path: Path
) -> None:
    issued = client_ca.issue("gateway", uri="spiffe://example.org/mcp-bastion")
    ctx = upstream_context(ca_bundle=pki.ca_cert, client_cert=issued.cert, client_key=issued.key)
    other_ca = ensure_local_pki(tmp_path / "other", []).ca_cert
    pinned_elsewhere = upstream_context(ca_bundle=other_ca, client_cert=issued.cert, client_key=issued.key)

    with running_server(_mtls(pki, client_ca, require=True)) as port:
        answer = get_json(port, ctx, host="localhost")
        wrong_name = refused_host(port, ctx, "not-the-gateway.test")
        wrong_ca = refused(port, pinned_elsewhere)

    assert peer_identity(bytes.fromhex(answer["tls"]["client_cert_der"])) == "spiffe://example.org/mcp-bastion"
    assert isinstance(wrong_name, ssl.SSLCertVerificationError)
    assert isinstance(wrong_ca, ssl.SSLCertVerificationError)


def refused_host(port: int, ctx: ssl.SSLContext, server_hostname: str) -> BaseException:
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as raw:
        try:
            ctx.wrap_socket(raw, server_hostname=server_hostname).close()
        except ssl.SSLError as exc:
            return exc
    raise AssertionError("handshake succeeded for a name the certificate does not carry")
