"""The two ``SSLContext`` objects of the gateway: the listener's, and the one for upstream MCP servers.

Both are built once at startup and shared: building a context loads certificates and the system trust
store (about 25 ms), far too slow to do per request or per connection.

Policy, the same on both edges:

- TLS 1.2 at least (1.3 if configured); TLS 1.3 is always preferred when both sides speak it.
- TLS 1.2 cipher suites are limited to ECDHE key exchange (forward secrecy) with an AEAD cipher
  (AES-GCM, ChaCha20-Poly1305); TLS 1.3 suites are all of that kind already.
- Certificates are checked with ``VERIFY_X509_STRICT`` (RFC 5280 conformance) and
  ``VERIFY_X509_PARTIAL_CHAIN`` (an intermediate may be pinned as the trust anchor), the flags
  Python 3.13 turns on by default.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Final, Literal

from mcp_bastion.errors import ConfigError

TLSMinimum = Literal["1.2", "1.3"]

TLS12_CIPHERS: Final = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!PSK"
"""OpenSSL cipher string for TLS 1.2: forward-secret, authenticated encryption only (no CBC, no RSA kx)."""

_VERSIONS: Final = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def server_context(
    cert: Path,
    key: Path,
    *,
    minimum_version: TLSMinimum = "1.2",
    client_ca: Path | None = None,
    require_client_cert: bool = False,
) -> ssl.SSLContext:
    """The listener's context; with ``client_ca``, client certificates are requested and verified.

    ``require_client_cert`` refuses the handshake without a valid client certificate; without it a
    client may still connect with none (and authenticate with a bearer token instead), but a
    certificate it does present must verify. Raises ``ConfigError`` for unusable files or settings.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(ctx, minimum_version)
    # Server preference so that a client offering a weak-but-allowed suite first still gets our order;
    # renegotiation is a DoS lever (client-initiated) and of no use to HTTP/1.1 clients.
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    _load_chain(ctx, cert, key, setting="tls.cert/tls.key")
    # HTTP/1.1 is all uvicorn speaks; announcing it lets ALPN-aware clients confirm rather than guess.
    ctx.set_alpn_protocols(["http/1.1"])
    if client_ca is not None:
        _load_trust(ctx, client_ca, setting="tls.client_auth.ca")
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    elif require_client_cert:
        raise ConfigError("tls.client_auth: required client certificates need a CA to verify them")
    return ctx


def upstream_context(
    *,
    ca_bundle: Path | None,
    client_cert: Path | None,
    client_key: Path | None,
    minimum_version: TLSMinimum = "1.2",
) -> ssl.SSLContext:
    """A client context for one upstream: verification and hostname checking always on.

    ``ca_bundle`` pins the trust anchors (the system store is used only when it is ``None``);
    ``client_cert``/``client_key`` present a certificate to upstreams that require mTLS.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname by construction
    _harden(ctx, minimum_version)
    if ca_bundle is not None:
        _load_trust(ctx, ca_bundle, setting="upstreams.*.ca_bundle")
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if client_key is not None and client_cert is None:
        raise ConfigError("upstreams.*.client_key: given without client_cert")
    if client_cert is not None:
        _load_chain(ctx, client_cert, client_key, setting="upstreams.*.client_cert/client_key")
    # Stated again so a future edit above cannot quietly weaken it.
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = True
    return ctx


def _harden(ctx: ssl.SSLContext, minimum_version: str) -> None:
    try:
        ctx.minimum_version = _VERSIONS[minimum_version]
    except KeyError:
        raise ConfigError(f"tls.minimum_version: {minimum_version!r} is not one of 1.2, 1.3") from None
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT | ssl.VERIFY_X509_PARTIAL_CHAIN


def _load_chain(ctx: ssl.SSLContext, cert: Path, key: Path | None, *, setting: str) -> None:
    try:
        ctx.load_cert_chain(certfile=cert, keyfile=key)
    except (OSError, ssl.SSLError) as exc:
        # The path names the setting; the OpenSSL reason says what is wrong with the file.
        raise ConfigError(f"{setting}: cannot load {cert} / {key}: {exc}") from exc


def _load_trust(ctx: ssl.SSLContext, cafile: Path, *, setting: str) -> None:
    try:
        ctx.load_verify_locations(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{setting}: cannot load CA certificates from {cafile}: {exc}") from exc
