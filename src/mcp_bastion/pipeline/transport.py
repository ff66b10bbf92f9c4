"""Stage ``transport``: is this HTTP request acceptable at all, before anyone looks at credentials?

- HTTPS only (plain HTTP exists only with ``server.allow_insecure_http`` on loopback);
- ``Host`` must be one of ours and ``Origin``, when a browser sends one, must be allowed: together the
  DNS-rebinding defence the MCP transport spec asks servers to implement;
- a POST must declare ``Content-Type: application/json`` and accept JSON or SSE;
- with ``tls.client_auth.required``, a verified client certificate must be present.
"""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import urlsplit

from mcp_bastion.errors import NotAcceptable, TransportRejected, UnsupportedMediaType
from mcp_bastion.exchange import Exchange


class Transport:
    name: ClassVar[str] = "transport"

    def __init__(
        self,
        *,
        allowed_hosts: frozenset[str],
        allowed_origins: frozenset[str],
        require_https: bool,
        require_client_cert: bool,
    ) -> None:
        self.allowed_hosts = frozenset(h.lower() for h in allowed_hosts)
        self.allowed_origins = frozenset(o.lower().rstrip("/") for o in allowed_origins)
        self.require_https = require_https
        self.require_client_cert = require_client_cert

    async def __call__(self, exchange: Exchange) -> None:
        http = exchange.http
        if self.require_https and http.scheme != "https":
            raise TransportRejected("plain HTTP request", reason="https_required")
        host = http.headers.get("host", "").lower()
        if host not in self.allowed_hosts:
            raise TransportRejected(f"Host {host[:100]!r} is not served here", reason="host_not_allowed")
        origin = http.headers.get("origin")
        if origin is not None and origin.lower().rstrip("/") not in self.allowed_origins:
            raise TransportRejected(f"Origin {origin[:100]!r} is not allowed", reason="origin_not_allowed")
        if self.require_client_cert and http.client_cert_der is None:
            raise TransportRejected("no client certificate", reason="client_cert_required")
        if http.method == "POST":
            ctype = http.headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if ctype != "application/json":
                raise UnsupportedMediaType(f"content type {ctype[:60]!r}")
            if not _accepts(http.headers.get("accept", "*/*"), ("application/json", "text/event-stream")):
                raise NotAcceptable("client accepts neither JSON nor SSE")
        elif http.method == "GET" and not _accepts(http.headers.get("accept", ""), ("text/event-stream",)):
            raise NotAcceptable("GET stream needs Accept: text/event-stream")


def _accepts(accept: str, types: tuple[str, ...]) -> bool:
    wanted = set(types)
    for part in accept.split(","):
        media = part.split(";", 1)[0].strip().lower()
        if media in wanted or (media in ("*/*", "application/*", "text/*") and _family_ok(media, types)):
            return True
    return False


def _family_ok(media: str, types: tuple[str, ...]) -> bool:
    if media == "*/*":
        return True
    family = media.split("/", 1)[0]
    return any(t.startswith(family + "/") for t in types)


def hosts_for(base_url: str, host: str, port: int, extra: tuple[str, ...]) -> frozenset[str]:
    """Host header values we answer to: the public URL's, the bound address's and configured extras."""
    public = urlsplit(base_url)
    names = {public.netloc.lower()}
    default_port = 443 if public.scheme == "https" else 80
    if public.port in (None, default_port) and public.hostname:
        names.add(public.hostname.lower())
    bound = f"[{host}]" if ":" in host else host
    names.add(f"{bound}:{port}".lower())
    if host in ("127.0.0.1", "::1", "localhost"):
        names.update({f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"})
    names.update(h.lower() for h in extra)
    return frozenset(names)


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()
