"""The TLS facts of a connection as the ASGI app sees them, and the principal a client certificate names.

No ASGI server hands the client certificate to the app. The protocol subclasses in ``h11_protocol``
and ``httptools_protocol`` read the facts once per connection (``read_tls_info``, right after the
handshake) and wrap the app (``with_tls``) so that every request on that connection carries a fresh copy
in ``scope["extensions"]["tls"]``. Plain-HTTP connections get no ``"tls"`` key.

This is deliberately not the layout of the ASGI "TLS extension" (PEM chains, integer version and cipher
codes): the gateway needs the DER leaf it can parse and the names it logs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any, Protocol, TypedDict

from cryptography import x509
from cryptography.x509.oid import NameOID

ASGIApp = Callable[[MutableMapping[str, Any], Any, Any], Awaitable[None]]
"""An ASGI 3 application, typed loosely: this layer only adds a scope key and passes everything on."""


class TLSInfo(TypedDict):
    """``scope["extensions"]["tls"]`` on a TLS connection."""

    version: str
    """Negotiated protocol, e.g. ``"TLSv1.3"``."""
    cipher: str
    """OpenSSL name of the negotiated suite, e.g. ``"TLS_AES_256_GCM_SHA384"``."""
    client_cert_der: bytes | None
    """The client certificate (leaf, DER) that passed verification, or ``None`` when none was sent."""


class _HasExtraInfo(Protocol):
    def get_extra_info(self, name: str, default: Any = None) -> Any: ...


def scope_tls(scope: Mapping[str, Any]) -> TLSInfo | None:
    """The ``TLSInfo`` of a request, or ``None`` when it did not arrive over TLS through our protocols."""
    extensions = scope.get("extensions") or {}
    info: TLSInfo | None = extensions.get("tls")
    return info


def peer_identity(der: bytes) -> str:
    """The principal a client certificate names: its first SAN URI (``spiffe://…``), else its subject CN.

    DNS SANs are not used: they name hosts, and a host name is not a user or workload identity.
    Raises ``ValueError`` when the certificate names neither (or is not a certificate).
    """
    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        uris: list[str] = []
    else:
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if uris:
        return uris[0]
    for attribute in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        if isinstance(attribute.value, str) and attribute.value:
            return attribute.value
    raise ValueError("client certificate has neither a SAN URI nor a subject common name")


def read_tls_info(transport: _HasExtraInfo) -> TLSInfo | None:
    """The TLS facts of a connected transport (asyncio or uvloop), ``None`` for plain TCP."""
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    cipher = ssl_object.cipher()
    return TLSInfo(
        version=ssl_object.version() or "",
        cipher=cipher[0] if cipher else "",
        client_cert_der=ssl_object.getpeercert(binary_form=True),
    )


def with_tls(app: ASGIApp, info: TLSInfo) -> ASGIApp:
    """``app``, with ``info`` placed in each request's ``scope["extensions"]["tls"]``."""

    async def app_with_tls(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        # A copy per request: an app that edits its scope must not change what the next request sees.
        scope.setdefault("extensions", {})["tls"] = info.copy()
        await app(scope, receive, send)

    return app_with_tls
