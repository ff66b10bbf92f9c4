"""The local PKI: a private CA and a server certificate kept in the state directory.

Used when the operator configures no certificate of their own, so that the gateway never serves plain
HTTP by default. Clients trust ``ca.crt`` once; the server certificate it signs is renewed on start
when it nears expiry or lacks a requested name, without touching the CA.

Invariants:

- The directory is 0700 and private keys are 0600 from the moment their file exists (created with that
  mode, written to a temporary name, then ``os.replace``d), so a key is never readable by others, not
  even for an instant, and never half-written.
- An existing key file readable by group or others is refused (``ConfigError``), not silently fixed:
  the key may already have leaked, and the operator must decide.
- The CA is never replaced once its certificate exists, because clients may trust it. A CA that cannot
  be used (key missing or not matching, expired) stops startup with ``ConfigError``.
- Keys are ECDSA P-256: a full handshake costs the server about a third of RSA-2048 (STACK.md).
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import re
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mcp_bastion.errors import ConfigError
from mcp_bastion.privatefile import check_private, write_atomic

CA_VALIDITY: Final = timedelta(days=3652)
"""Ten years: the CA is distributed to clients by hand, so it should rarely change."""
SERVER_VALIDITY: Final = timedelta(days=397)
"""The CA/Browser Forum maximum for a TLS server certificate; browsers refuse longer ones."""
RENEW_BEFORE: Final = timedelta(days=30)
"""A server certificate expiring sooner than this is re-issued at start."""
CLOCK_SKEW: Final = timedelta(minutes=5)
"""``notBefore`` is back-dated by this much so clients with a slightly slow clock accept new certs."""
DEFAULT_NAMES: Final = ("localhost", "127.0.0.1", "::1")
"""Always in the server certificate, besides the configured hostnames."""

CA_CERT: Final = "ca.crt"
CA_KEY: Final = "ca.key"
SERVER_CERT: Final = "server.crt"
SERVER_KEY: Final = "server.key"
_LOCK: Final = ".pki.lock"

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")

SANName = x509.DNSName | x509.IPAddress


@dataclass(frozen=True, slots=True)
class LocalPKI:
    """Paths of the local PKI files (the CA key stays in the same directory, never handed out)."""

    ca_cert: Path
    """What clients must trust (PEM)."""
    server_cert: Path
    """Leaf certificate for the gateway's TLS listener (PEM)."""
    server_key: Path
    """Its private key (PKCS#8 PEM, mode 0600)."""


def ensure_local_pki(state_dir: Path, hostnames: Sequence[str], *, now: datetime | None = None) -> LocalPKI:
    """Create or reuse the local CA and a server certificate covering ``hostnames``.

    ``hostnames`` may hold DNS names and IP addresses; ``DEFAULT_NAMES`` are always added. ``now`` is
    injectable for tests. Raises ``ConfigError`` when an existing file cannot be used safely.
    """
    when = now if now is not None else datetime.now(UTC)
    wanted = _san_names([*DEFAULT_NAMES, *hostnames])
    _ensure_private_dir(state_dir)
    # Two processes starting on one state directory must not interleave a key with another's cert.
    with _locked(state_dir / _LOCK):
        ca_cert, ca_key = _ensure_ca(state_dir, when)
        _ensure_server(state_dir, ca_cert, ca_key, wanted, when)
    return LocalPKI(ca_cert=state_dir / CA_CERT, server_cert=state_dir / SERVER_CERT, server_key=state_dir / SERVER_KEY)


# --- names -------------------------------------------------------------------------------------------


def _san_names(names: Sequence[str]) -> list[SANName]:
    """Parse names into SAN entries, in order, without duplicates; refuse anything not a host."""
    result: list[SANName] = []
    for raw in names:
        entry = _san_name(raw)
        if entry not in result:
            result.append(entry)
    return result


def _san_name(raw: str) -> SANName:
    try:
        return x509.IPAddress(ipaddress.ip_address(raw.strip("[]")))
    except ValueError:
        pass
    name = raw.lower().rstrip(".")
    # Wildcards are refused on purpose: the local CA signs only names this gateway answers to.
    if not name or len(name) > 253 or not all(_LABEL.match(label) for label in name.split(".")):
        raise ConfigError(f"tls hostnames: {raw!r} is not a DNS name or IP address")
    return x509.DNSName(name)


def _covered(cert: x509.Certificate, wanted: Sequence[SANName]) -> bool:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    have = {name for name in san if isinstance(name, x509.DNSName | x509.IPAddress)}
    return all(name in have for name in wanted)


# --- CA and server certificate ------------------------------------------------------------------------


def _ensure_ca(state_dir: Path, now: datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = state_dir / CA_CERT, state_dir / CA_KEY
    if not cert_path.exists():
        # No certificate means no client can trust this CA yet, so a stray key (a crash between the
        # two writes) may be replaced.
        cert, key = _new_ca(now)
        _write_private_key(key_path, key)
        write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
        return cert, key
    if not key_path.exists():
        raise ConfigError(f"local CA: {cert_path} exists but its key {key_path} is missing")
    _check_key_mode(key_path)
    pair = _load_pair(cert_path, key_path)
    if pair is None:
        raise ConfigError(f"local CA: {cert_path} or {key_path} is unreadable or they do not match")
    cert, key = pair
    if not _is_ca(cert) or not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
        raise ConfigError(
            f"local CA: {cert_path} is not a valid CA at {now:%Y-%m-%d}; move the directory away to make a new CA"
        )
    return cert, key


def _ensure_server(
    state_dir: Path,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    wanted: Sequence[SANName],
    now: datetime,
) -> None:
    cert_path, key_path = state_dir / SERVER_CERT, state_dir / SERVER_KEY
    if key_path.exists():
        _check_key_mode(key_path)
        pair = _load_pair(cert_path, key_path) if cert_path.exists() else None
        if pair is not None and _server_cert_usable(pair[0], ca_cert, wanted, now):
            return
    # A fresh key with every re-issue: a renewal should not extend the life of an old key.
    cert, key = _new_server_cert(ca_cert, ca_key, wanted, now)
    # Key first: a crash in between leaves a mismatched pair, which the next start detects and re-issues.
    _write_private_key(key_path, key)
    write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)


def _server_cert_usable(
    cert: x509.Certificate, ca_cert: x509.Certificate, wanted: Sequence[SANName], now: datetime
) -> bool:
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    fresh = cert.not_valid_before_utc <= now and now + RENEW_BEFORE < cert.not_valid_after_utc
    return fresh and _covered(cert, wanted)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _new_ca(now: datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    # A random suffix tells installations apart in a trust store that holds several of them.
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mcp-bastion"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"mcp-bastion local CA {secrets.token_hex(4)}"),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + CA_VALIDITY)
        # pathlen 0: this CA signs leaf certificates only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _new_server_cert(
    ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, names: Sequence[SANName], now: datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    first = names[0]
    common_name = first.value if isinstance(first, x509.DNSName) else str(first.value)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        # Never outlive the issuer: clients would reject the chain after the CA expires anyway.
        .not_valid_after(min(now + SERVER_VALIDITY, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


# --- files ---------------------------------------------------------------------------------------------


def _load_pair(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    """Load a certificate and its key; ``None`` when unreadable, of another type, or not a pair."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or _spki(key.public_key()) != _spki_of(cert):
        return None
    return cert, key


def _spki(public_key: ec.EllipticCurvePublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _spki_of(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _check_key_mode(path: Path) -> None:
    check_private(path, "tls key file")


def _ensure_private_dir(path: Path) -> None:
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkdir leaves an existing directory's mode alone; it holds a CA key, so tighten it.
        os.chmod(path, 0o700)
    except OSError as exc:
        raise ConfigError(f"tls state directory {path}: {exc.strerror}") from exc


def _write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    write_atomic(path, pem)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
