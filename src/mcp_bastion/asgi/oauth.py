"""The authorization server's JSON endpoints as Starlette routes: token, registration, revocation,
introspection, metadata and JWKS. (The browser-facing /authorize, login and consent are ``asgi.pages``.)

RFC 6749 §3.1 and §3.2 (form-encoded POST; a parameter sent twice is an error; one sent empty counts as
absent), §5.1 and §5.2 (JSON responses, ``Cache-Control: no-store`` and ``Pragma: no-cache``; the error
object; ``invalid_client`` is 401 with ``WWW-Authenticate``), RFC 7591 §3 (JSON registration request, 201),
RFC 7009 §2.2 (revocation answers 200 with no body), RFC 7662 §2.2, RFC 8414 §3 (metadata), RFC 7517 §5.

Invariants:
- bodies are read up to a fixed limit and refused beyond it (413), before any parsing;
- every refusal is an RFC 6749 §5.2 error object; any other exception becomes ``server_error`` (500) or,
  for a store that cannot be read, ``temporarily_unavailable`` (503): the client never sees a stack trace
  or an exception message;
- nothing here decides anything: the routes parse, call ``AuthorizationServer``, and render.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final
from urllib.parse import parse_qsl, urlsplit

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mcp_bastion.errors import Unavailable
from mcp_bastion.jsonrpc.message import JSONValue
from mcp_bastion.oauth.refusal import Refusal
from mcp_bastion.oauth.server import AuthorizationServer
from mcp_bastion.oauth.service import OAuthError

logger = logging.getLogger(__name__)

MAX_FORM_BYTES: Final = 16 * 1024
"""Token, revocation and introspection requests: a few hundred bytes, a client assertion a few KB."""
MAX_REGISTRATION_BYTES: Final = 64 * 1024
"""Registration requests: redirect URIs and possibly an inline JWK Set."""

NO_STORE: Final = {"cache-control": "no-store", "pragma": "no-cache"}
DOCUMENT_CACHE: Final = {"cache-control": "public, max-age=300"}
FORM_TYPE: Final = "application/x-www-form-urlencoded"

Handler = Callable[[Request], Awaitable[Response]]


def _json(value: JSONValue, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(value), status, headers=headers or NO_STORE, media_type="application/json")


def _error(error: OAuthError) -> Response:
    body: dict[str, JSONValue] = {"error": error.error}
    if error.description:
        body["error_description"] = error.description
    headers = dict(NO_STORE)
    status = error.status if 400 <= error.status < 600 else 400
    if error.error == "invalid_client" and status == 401:
        # RFC 6749 §5.2: a 401 names the scheme the client may use.
        headers["www-authenticate"] = 'Basic realm="oauth"'
    elif error.error == "invalid_token" and status == 401:
        headers["www-authenticate"] = 'Bearer error="invalid_token"'
    return _json(body, status, headers)


async def _body(request: Request, limit: int, media_type: str) -> bytes:
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != media_type:
        raise Refusal("invalid_request", "content_type_invalid", f"the body must be {media_type}")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise Refusal("invalid_request", "body_too_large", "request body too large", status=413)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refusal("invalid_request", "body_too_large", "request body too large", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_form(request: Request) -> dict[str, str]:
    """An RFC 6749 §3.2 request body: UTF-8 form encoding, each parameter at most once, empty = absent."""
    body = await _body(request, MAX_FORM_BYTES, FORM_TYPE)
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body), errors="strict")
    except (UnicodeDecodeError, ValueError) as exc:
        raise Refusal("invalid_request", "form_malformed", "the body is not a valid form") from exc
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise Refusal("invalid_request", "parameter_repeated", f"{name} is sent more than once")
        form[name] = value
    return {name: value for name, value in form.items() if value != ""}


async def read_json_object(request: Request) -> dict[str, object]:
    body = await _body(request, MAX_REGISTRATION_BYTES, "application/json")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Refusal("invalid_client_metadata", "body_malformed", "the body is not JSON") from exc
    if not isinstance(value, dict):
        raise Refusal("invalid_client_metadata", "body_malformed", "the body must be a JSON object")
    return value


def _guarded(handler: Handler) -> Handler:
    """Render every refusal as an RFC 6749 §5.2 error, and every failure without its details."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except OAuthError as error:
            return _error(error)
        except Unavailable:
            logger.warning("oauth endpoint %s: a store is unavailable", request.url.path, exc_info=True)
            return _error(OAuthError("temporarily_unavailable", status=503))
        except Exception:
            # The ASGI top level of these endpoints: opaque to the client, precise in the log.
            logger.exception("oauth endpoint %s failed", request.url.path)
            return _error(OAuthError("server_error", status=500))

    return endpoint


def oauth_routes(server: AuthorizationServer) -> list[Route]:
    """The JSON endpoints of ``server``, at the paths of its issuer's endpoint URLs."""

    async def token(request: Request) -> Response:
        form = await read_form(request)
        return _json(await server.token(form, request.headers.get("authorization")))

    async def register(request: Request) -> Response:
        body = await read_json_object(request)
        return _json(await server.register(body, request.headers.get("authorization")), 201)

    async def revoke(request: Request) -> Response:
        form = await read_form(request)
        await server.revoke(form, request.headers.get("authorization"))
        return Response(b"", 200, headers=NO_STORE)

    async def introspect(request: Request) -> Response:
        form = await read_form(request)
        return _json(await server.introspect(form, request.headers.get("authorization")))

    async def metadata(request: Request) -> Response:
        return _json(server.metadata(), headers=DOCUMENT_CACHE)

    async def jwks(request: Request) -> Response:
        return _json(server.jwks(), headers=DOCUMENT_CACHE)

    endpoints = server.endpoints
    well_known, openid = endpoints.metadata_paths

    def path(url: str) -> str:
        return urlsplit(url).path

    return [
        Route(path(endpoints.token), _guarded(token), methods=["POST"]),
        Route(path(endpoints.registration), _guarded(register), methods=["POST"]),
        Route(path(endpoints.revocation), _guarded(revoke), methods=["POST"]),
        Route(path(endpoints.introspection), _guarded(introspect), methods=["POST"]),
        Route(well_known, _guarded(metadata), methods=["GET"]),
        Route(openid, _guarded(metadata), methods=["GET"]),
        Route(path(endpoints.jwks), _guarded(jwks), methods=["GET"]),
    ]
