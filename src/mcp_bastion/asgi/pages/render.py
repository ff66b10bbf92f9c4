"""Rendering the pages: Jinja2 templates and the headers every response carries.

Templates are autoescaped (HTML-escaping is on for every template, whatever its name) and strict (an
undefined variable is an error, not an empty string), so a client name like ``<script>…`` renders as text.
Pages have no scripts at all; the Content-Security-Policy says so (``default-src 'none'``) and allows only
our own stylesheet.

``form-action`` lists ``'self'`` and, for pages whose form may end in a redirect to the client (login with
remembered consent, consent), the client's redirect origin: browsers (Chromium at least) apply
``form-action`` to every hop of a form submission's redirect chain, so a 303 to the client after a POST
is blocked unless its origin is listed. The login page also lists the authorization endpoint origin of
each external IdP: its "Sign in with …" POST answers 303 to the IdP.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from importlib.resources import files
from urllib.parse import urlsplit

from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.responses import Response

STATIC_CSS_PATH = "/static/bastion.css"

_env = Environment(
    loader=PackageLoader("mcp_bastion.asgi.pages", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    auto_reload=False,
    trim_blocks=True,
    lstrip_blocks=True,
)

STYLESHEET = (files("mcp_bastion.asgi.pages") / "templates" / "bastion.css").read_bytes()


def content_security_policy(form_targets: Sequence[str] = ()) -> str:
    form_action = " ".join(("'self'", *form_targets))
    return f"default-src 'none'; style-src 'self'; form-action {form_action}; frame-ancestors 'none'; base-uri 'none'"


def security_headers(form_targets: Sequence[str] = ()) -> dict[str, str]:
    """The headers on every response of the pages (HTML and the stylesheet alike)."""
    return {
        "content-security-policy": content_security_policy(form_targets),
        "x-frame-options": "DENY",
        "referrer-policy": "no-referrer",
        "cache-control": "no-store",
        "x-content-type-options": "nosniff",
    }


def _is_loopback(host: str) -> bool:
    name = host.removeprefix("[").removesuffix("]")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def redirect_sources(redirect_host: str) -> tuple[str, ...]:
    """CSP sources for the client's redirect URI, given its ``host[:port]``.

    The seam exposes the host, not the scheme: redirect URIs are https, or http on loopback (RFC 8252
    §7.3), so those are the origins listed. A private-use scheme (``com.example.app:/cb``) is not covered
    and its redirect would be blocked; it needs the scheme from the service.
    """
    if not redirect_host.isascii() or not redirect_host.isprintable() or any(c in redirect_host for c in " ;,'\"*/\\"):
        return ()  # never let a strange host widen or break the policy
    if redirect_host.startswith("["):
        host = redirect_host[: redirect_host.find("]") + 1]
    else:
        host = redirect_host.partition(":")[0]
    if not host:
        return ()
    sources = [f"https://{redirect_host}"]
    if _is_loopback(host):
        sources.append(f"http://{redirect_host}")
    return tuple(sources)


class PageError(Exception):
    """A refusal shown to the user as an error page; ``reason`` is the stable code tests and logs use."""

    def __init__(
        self, status: int, reason: str, title: str, message: str, *, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.title = title
        self.message = message
        self.headers = dict(headers or {})


def csrf_refused() -> PageError:
    """A form whose CSRF token does not match this browser and authorization (shared by every form)."""
    return PageError(
        403,
        "csrf_invalid",
        "This form could not be verified",
        "It was not sent from this browser's sign-in page, or it has expired. Please start again from the application.",
    )


def origin_source(url: str) -> str | None:
    """The CSP source (``scheme://host[:port]``) of an http(s) URL, or None when it could not be one safely."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    netloc = parts.netloc
    if parts.scheme not in ("https", "http") or not netloc or "@" in netloc:
        return None
    if not netloc.isascii() or not netloc.isprintable() or any(c in netloc for c in " ;,'\"*/\\"):
        return None  # never let a strange host widen or break the policy
    return f"{parts.scheme}://{netloc}"


def page(
    template: str,
    context: Mapping[str, object],
    *,
    status: int = 200,
    form_targets: Sequence[str] = (),
    headers: Mapping[str, str] | None = None,
) -> Response:
    html = _env.get_template(template).render({"stylesheet": STATIC_CSS_PATH, **context})
    all_headers = {**security_headers(form_targets), **(headers or {})}
    return Response(html, status_code=status, headers=all_headers, media_type="text/html; charset=utf-8")


def error_page(error: PageError) -> Response:
    context = {"title": error.title, "message": error.message, "reason": error.reason, "status": error.status}
    return page("error.html", context, status=error.status, headers=error.headers)


def stylesheet() -> Response:
    return Response(STYLESHEET, headers=security_headers(), media_type="text/css; charset=utf-8")


def redirect(url: str) -> Response:
    """A 303 See Other: after a POST, the browser follows with a GET."""
    headers = {**security_headers(), "location": url}
    return Response(status_code=303, headers=headers)
