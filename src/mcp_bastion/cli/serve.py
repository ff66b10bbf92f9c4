"""``mcp-bastion serve``: run the gateway over HTTPS (or plain HTTP on loopback when explicitly allowed)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from pathlib import Path

import uvicorn

from mcp_bastion.app import Gateway, build_gateway
from mcp_bastion.settings import Settings
from mcp_bastion.tls.certs import LocalPKI, ensure_local_pki
from mcp_bastion.tls.context import server_context
from mcp_bastion.tls.server import make_uvicorn_config

log = logging.getLogger("mcp_bastion")


def listener_context(settings: Settings) -> tuple[ssl.SSLContext | None, LocalPKI | None]:
    """The TLS context for the listener, creating a local CA and certificate on first start if needed."""
    if settings.server.allow_insecure_http:
        return None, None
    tls = settings.tls
    pki: LocalPKI | None = None
    if tls.cert is None or tls.key is None:
        from urllib.parse import urlsplit

        public_host = urlsplit(settings.server.base_url).hostname or "localhost"
        names = sorted({public_host, settings.server.host} - {"0.0.0.0", "::"})  # noqa: S104 - not binding
        pki = ensure_local_pki(settings.server.state_dir / "tls", names)
        cert, key = pki.server_cert, pki.server_key
    else:
        cert, key = tls.cert, tls.key
    client_auth = tls.client_auth
    context = server_context(
        cert,
        key,
        minimum_version=tls.minimum_version,
        client_ca=client_auth.ca if client_auth else None,
        require_client_cert=bool(client_auth and client_auth.required),
    )
    return context, pki


def make_server(gateway: Gateway, context: ssl.SSLContext | None, *, port: int | None = None) -> uvicorn.Server:
    settings = gateway.settings
    config = make_uvicorn_config(
        gateway.app,
        settings.server.host,
        settings.server.port if port is None else port,
        context,
        header_timeout=settings.limits.header_timeout,
        max_head_bytes=settings.limits.max_header_bytes,
        on_refusal=gateway.refused_connection,
    )
    return uvicorn.Server(config)


def serve(settings: Settings) -> None:
    context, pki = listener_context(settings)
    gateway = build_gateway(settings)
    if pki is not None:
        log.warning("TLS: using the local CA %s (clients must trust it)", pki.ca_cert)
    server = make_server(gateway, context)
    run(server)


def run(server: uvicorn.Server) -> None:
    """Serve on uvloop when it is installed (uvicorn only does that itself in ``Server.run``)."""
    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(server.serve())


def state_path(settings: Settings, name: str) -> Path:
    return settings.server.state_dir / name
