"""``make_uvicorn_config``: the one place where the listener's TLS context, protocol and limits meet uvicorn.

Run the gateway with::

    ctx = server_context(pki.server_cert, pki.server_key, client_ca=..., require_client_cert=...)
    config = make_uvicorn_config(app, "127.0.0.1", 8443, ctx)
    await uvicorn.Server(config).serve()      # or uvicorn.Server(config).run() from synchronous code

uvicorn 0.54 takes a ready ``SSLContext`` only through ``ssl_context_factory(config, default_factory)``;
we return our context and ignore its default (which would be built from ``ssl_*`` file options). The
factory and the context cannot be pickled, so this config serves in one process (``workers=1``): scale
with replicas, not uvicorn workers.

Defaults that differ from uvicorn's, and why:

- ``proxy_headers=False``: uvicorn otherwise trusts ``X-Forwarded-For``/``-Proto`` from 127.0.0.1, so
  any local process could spoof the client address or scheme the gate decides on.
- ``lifespan="on"``: with ``"auto"`` an app whose startup raises is logged as "lifespan unsupported"
  and served anyway, half-initialised; ``"on"`` stops the server instead (fail closed).
- ``ws="none"``: MCP needs no WebSocket, so no WebSocket parser is exposed.
- ``server_header``/``date_header`` off, ``access_log`` off (the audit log records every exchange),
  ``log_level="warning"``.
- ``timeout_keep_alive=30``, ``timeout_graceful_shutdown=30`` (uvicorn waits forever for open
  connections, and SSE streams stay open), ``limit_concurrency`` (503 beyond it).
"""

from __future__ import annotations

import asyncio
import importlib.util
import ssl
from collections.abc import Callable
from typing import Any, Final

import uvicorn

from mcp_bastion.tls.h11_protocol import TLSH11Protocol
from mcp_bastion.tls.headguard import DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_HEAD_BYTES, Refusal
from mcp_bastion.tls.peercert import ASGIApp

DEFAULT_LIMIT_CONCURRENCY: Final = 1024
"""Connections plus in-flight requests served at once; beyond it uvicorn answers 503."""
KEEP_ALIVE_SECONDS: Final = 30
"""Idle time allowed between requests on one connection (a full TLS handshake costs ~1 ms of CPU)."""
GRACEFUL_SHUTDOWN_SECONDS: Final = 30
"""How long shutdown waits for open connections (SSE streams included) before cancelling them."""


def protocol_class(
    *,
    header_timeout: float | None = DEFAULT_HEADER_TIMEOUT,
    max_head_bytes: int = DEFAULT_MAX_HEAD_BYTES,
    on_refusal: Refusal | None = None,
) -> type[asyncio.Protocol]:
    """The HTTP protocol uvicorn should run: httptools when installed (fastest), else h11."""
    limits: dict[str, Any] = {
        "header_timeout": header_timeout,
        "max_head_bytes": max_head_bytes,
        "on_refusal": on_refusal,
    }
    try:
        from mcp_bastion.tls.httptools_protocol import TLSHttpToolsProtocol
    except ImportError:
        return TLSH11Protocol.configured(**limits)
    return TLSHttpToolsProtocol.configured(**limits)


def make_uvicorn_config(
    app: ASGIApp,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None,
    *,
    header_timeout: float | None = DEFAULT_HEADER_TIMEOUT,
    max_head_bytes: int = DEFAULT_MAX_HEAD_BYTES,
    limit_concurrency: int = DEFAULT_LIMIT_CONCURRENCY,
    on_refusal: Refusal | None = None,
    **overrides: Any,
) -> uvicorn.Config:
    """A uvicorn ``Config`` serving ``app`` with ``ssl_context`` (``None``: plain HTTP, tests only).

    ``overrides`` are passed to ``uvicorn.Config`` last, e.g. ``http=TLSH11Protocol`` or
    ``loop="asyncio"``; every default above is the secure one.
    """
    options: dict[str, Any] = {
        "http": protocol_class(header_timeout=header_timeout, max_head_bytes=max_head_bytes, on_refusal=on_refusal),
        "loop": "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio",
        "ws": "none",
        "interface": "asgi3",
        "lifespan": "on",
        "log_level": "warning",
        "access_log": False,
        "server_header": False,
        "date_header": False,
        "proxy_headers": False,
        "limit_concurrency": limit_concurrency,
        "timeout_keep_alive": KEEP_ALIVE_SECONDS,
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_SECONDS,
        # Used by uvicorn's plain H11Protocol if an override selects it; ours carry the same limit.
        "h11_max_incomplete_event_size": max_head_bytes,
    }
    if ssl_context is not None:
        options["ssl_context_factory"] = _fixed_context(ssl_context)
    options.update(overrides)
    return uvicorn.Config(app, host=host, port=port, **options)


def _fixed_context(
    ctx: ssl.SSLContext,
) -> Callable[[uvicorn.Config, Callable[[], ssl.SSLContext]], ssl.SSLContext]:
    def factory(_config: uvicorn.Config, _default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        return ctx

    return factory
