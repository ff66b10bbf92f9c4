"""Test support for ``tests/tls``: a client-certificate CA, a real uvicorn server in a thread, TLS clients.

Every wait is bounded: sockets carry a timeout, the server start and stop are polled with a deadline.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mcp_bastion.tls.h11_protocol import TLSH11Protocol
from mcp_bastion.tls.httptools_protocol import TLSHttpToolsProtocol
from mcp_bastion.tls.server import make_uvicorn_config

IO_TIMEOUT = 5.0
"""Upper bound on any single socket operation in these tests."""

Flavour = Literal["httptools-uvloop", "h11-asyncio"]
FLAVOURS: tuple[Flavour, ...] = ("httptools-uvloop", "h11-asyncio")
"""Both protocol subclasses, each on one of the two event loops (their transports differ)."""


# --- certificates -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path
    der: bytes


class ClientCA:
    """A CA issuing client certificates, as a company PKI or SPIFFE would."""

    def __init__(self, directory: Path, name: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.ski = x509.SubjectKeyIdentifier.from_public_key(self.key.public_key())
        now = datetime.now(UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(self.ski, critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_path = directory / "client-ca.crt"
        self.cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self, stem: str, *, common_name: str | None = None, uri: str | None = None, dns: str | None = None
    ) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else []
        now = datetime.now(UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(subject))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(self.ski), critical=False)
        )
        names: list[x509.GeneralName] = []
        if uri is not None:
            names.append(x509.UniformResourceIdentifier(uri))
        if dns is not None:
            names.append(x509.DNSName(dns))
        if names:
            # RFC 5280 §4.2.1.6: the SAN is critical when the subject is empty.
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=not subject)
        cert = builder.sign(self.key, hashes.SHA256())
        cert_path, key_path = self.directory / f"{stem}.crt", self.directory / f"{stem}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return Issued(cert=cert_path, key=key_path, der=cert.public_bytes(serialization.Encoding.DER))


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


# --- the server under test ----------------------------------------------------------------------------


async def echo_app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    """Answers every request with the JSON of ``scope["extensions"]["tls"]`` (DER as hex).

    ``/slow?<seconds>`` waits that long first, to show a slow *response* is not cut by the header timeout.
    """
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    if scope["path"] == "/slow":
        await asyncio.sleep(float(scope["query_string"]))
    tls = scope.get("extensions", {}).get("tls")
    if tls is not None:
        der = tls["client_cert_der"]
        tls = {**tls, "client_cert_der": der.hex() if der is not None else None}
    body = json.dumps({"echo": True, "tls": tls}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@contextmanager
def running_server(
    ssl_context: ssl.SSLContext | None,
    *,
    flavour: Flavour = "httptools-uvloop",
    header_timeout: float | None = 10.0,
) -> Iterator[int]:
    """Serve ``echo_app`` on 127.0.0.1 in a thread; yields the port."""
    protocol = TLSHttpToolsProtocol if flavour.startswith("httptools") else TLSH11Protocol
    config = make_uvicorn_config(
        echo_app,
        "127.0.0.1",
        0,
        ssl_context,
        http=protocol.configured(header_timeout=header_timeout, max_head_bytes=16_384),
        loop="uvloop" if flavour.endswith("uvloop") else "asyncio",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    sock = socket.create_server(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        _wait_until(lambda: server.started or not thread.is_alive(), "server start")
        assert server.started, "uvicorn did not start"
        yield port
    finally:
        server.should_exit = True
        thread.join(IO_TIMEOUT)
        sock.close()
    # Outside ``finally`` so that it cannot hide the failure of the test body.
    assert not thread.is_alive(), "uvicorn did not stop"


def _wait_until(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + IO_TIMEOUT
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.01)


# --- clients -------------------------------------------------------------------------------------------


def client_context(
    trust: Path,
    *,
    maximum_version: ssl.TLSVersion | None = None,
    ciphers: str | None = None,
    cert: Issued | None = None,
) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=trust)
    if maximum_version is not None:
        ctx.maximum_version = maximum_version
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    if cert is not None:
        ctx.load_cert_chain(cert.cert, cert.key)
    return ctx


def get_json(port: int, ctx: ssl.SSLContext, path: str = "/", *, host: str = "127.0.0.1") -> Any:
    """One HTTPS GET; returns the decoded JSON body of a 200 answer."""
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=IO_TIMEOUT)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        assert response.status == 200
        return json.loads(response.read())
    finally:
        conn.close()


def refused(port: int, ctx: ssl.SSLContext) -> BaseException:
    """Attempt a request that must be refused; returns the exception that refused it.

    In TLS 1.3 the client finishes its side of the handshake before the server has judged the client's
    certificate, so a refusal may surface on the handshake, the write or the read. A timeout is not a
    refusal and fails the test.
    """
    try:
        get_json(port, ctx)
    except TimeoutError:
        raise
    except (OSError, http.client.HTTPException) as exc:
        return exc
    raise AssertionError("request was served; it should have been refused")


@contextmanager
def tls_socket(port: int, ctx: ssl.SSLContext) -> Iterator[ssl.SSLSocket]:
    raw = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
    with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        yield tls


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (or resets) the connection."""
    chunks: list[bytes] = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (ConnectionResetError, ssl.SSLError):
        pass
    return b"".join(chunks)
