"""The local PKI: file modes, certificate contents, idempotence, re-issue, refusals."""

from __future__ import annotations

import ipaddress
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mcp_bastion.errors import ConfigError
from mcp_bastion.tls.certs import LocalPKI, ensure_local_pki


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _fingerprint(path: Path) -> tuple[int, int, bytes]:
    info = path.stat()
    return info.st_ino, info.st_mtime_ns, path.read_bytes()


def _files(pki: LocalPKI) -> list[Path]:
    return [pki.ca_cert, pki.ca_cert.with_name("ca.key"), pki.server_cert, pki.server_key]


@pytest.fixture
def umask_zero() -> Iterator[None]:
    """The most permissive umask: key modes must not depend on it."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.usefixtures("umask_zero")
def test_files_are_private(tmp_path: Path) -> None:
    pki = ensure_local_pki(tmp_path / "state", [])

    assert _mode(tmp_path / "state") == 0o700
    assert _mode(pki.server_key) == 0o600
    assert _mode(pki.ca_cert.with_name("ca.key")) == 0o600
    assert _mode(pki.ca_cert) == 0o644
    assert _mode(pki.server_cert) == 0o644
    # No temporary files left behind.
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == sorted(
        [".pki.lock", "ca.crt", "ca.key", "server.crt", "server.key"]
    )


def test_existing_directory_is_tightened(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)  # noqa: S103 - a too-open directory is what this test needs

    ensure_local_pki(state, [])

    assert _mode(state) == 0o700


def test_ca_certificate(pki: LocalPKI) -> None:
    ca = _cert(pki.ca_cert)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage)
    common_name = ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value

    assert constraints.critical
    assert (constraints.value.ca, constraints.value.path_length) == (True, 0)
    assert usage.critical
    assert usage.value.key_cert_sign
    assert usage.value.crl_sign
    assert isinstance(common_name, str)
    assert common_name.startswith("mcp-bastion local CA ")
    assert len(common_name) > len("mcp-bastion local CA ")
    key = ca.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert isinstance(key.curve, ec.SECP256R1)
    assert ca.not_valid_after_utc - ca.not_valid_before_utc >= timedelta(days=3650)


def test_server_certificate(pki: LocalPKI) -> None:
    ca, leaf = _cert(pki.ca_cert), _cert(pki.server_cert)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value

    leaf.verify_directly_issued_by(ca)
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "gateway.test"}
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    key = leaf.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert isinstance(key.curve, ec.SECP256R1)
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert timedelta(days=397) <= lifetime <= timedelta(days=397, minutes=5)


def test_second_start_rewrites_nothing(tmp_path: Path) -> None:
    first = ensure_local_pki(tmp_path / "state", ["gateway.test", "10.0.0.7"])
    before = [_fingerprint(p) for p in _files(first)]

    second = ensure_local_pki(tmp_path / "state", ["10.0.0.7", "GATEWAY.test."])

    assert second == first
    assert [_fingerprint(p) for p in _files(second)] == before


def test_new_hostname_reissues_server_cert_with_same_ca(tmp_path: Path) -> None:
    first = ensure_local_pki(tmp_path / "state", ["gateway.test"])
    ca_before = _fingerprint(first.ca_cert)
    key_before = first.server_key.read_bytes()

    second = ensure_local_pki(tmp_path / "state", ["gateway.test", "mcp.example.org"])

    names = _cert(second.server_cert).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert "mcp.example.org" in names.value.get_values_for_type(x509.DNSName)
    assert _fingerprint(second.ca_cert) == ca_before
    assert second.server_key.read_bytes() != key_before
    _cert(second.server_cert).verify_directly_issued_by(_cert(second.ca_cert))
    assert _mode(second.server_key) == 0o600


def test_server_cert_near_expiry_is_reissued(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    old = ensure_local_pki(tmp_path / "state", [], now=now - timedelta(days=380))
    old_serial = _cert(old.server_cert).serial_number

    new = ensure_local_pki(tmp_path / "state", [], now=now)

    leaf = _cert(new.server_cert)
    assert leaf.serial_number != old_serial
    assert leaf.not_valid_after_utc > now + timedelta(days=390)


def test_server_cert_not_signed_by_ca_is_reissued(tmp_path: Path) -> None:
    state = tmp_path / "state"
    ensure_local_pki(state, [])
    other = ensure_local_pki(tmp_path / "other", [])
    (state / "server.crt").write_bytes(other.server_cert.read_bytes())
    (state / "server.key").write_bytes(other.server_key.read_bytes())

    pki = ensure_local_pki(state, [])

    _cert(pki.server_cert).verify_directly_issued_by(_cert(pki.ca_cert))


@pytest.mark.parametrize("key_name", ["server.key", "ca.key"])
def test_group_or_world_readable_key_is_refused(tmp_path: Path, key_name: str) -> None:
    pki = ensure_local_pki(tmp_path / "state", [])
    os.chmod(pki.ca_cert.with_name(key_name), 0o644)

    with pytest.raises(ConfigError) as caught:
        ensure_local_pki(tmp_path / "state", [])

    assert caught.value.reason == "config_error"


def test_ca_without_its_key_is_refused(tmp_path: Path) -> None:
    pki = ensure_local_pki(tmp_path / "state", [])
    pki.ca_cert.with_name("ca.key").unlink()

    with pytest.raises(ConfigError):
        ensure_local_pki(tmp_path / "state", [])


def test_ca_is_never_replaced_by_a_mismatched_key(tmp_path: Path) -> None:
    state = tmp_path / "state"
    ensure_local_pki(state, [])
    other = ensure_local_pki(tmp_path / "other", [])
    (state / "ca.key").write_bytes(other.ca_cert.with_name("ca.key").read_bytes())

    with pytest.raises(ConfigError):
        ensure_local_pki(state, [])


def test_expired_ca_is_refused(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    ensure_local_pki(tmp_path / "state", [], now=now - timedelta(days=3700))

    with pytest.raises(ConfigError):
        ensure_local_pki(tmp_path / "state", [], now=now)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("", id="empty"),
        pytest.param("*.example.org", id="wildcard"),
        pytest.param("bad_host.example", id="underscore"),
        pytest.param("-lead.example", id="leading-hyphen"),
        pytest.param("a" * 64 + ".example", id="long-label"),
        pytest.param("exämple.org", id="not-a-label"),
    ],
)
def test_bad_hostname_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError):
        ensure_local_pki(tmp_path / "state", [name])
    # Nothing is written for a refused configuration.
    assert not (tmp_path / "state").exists()
