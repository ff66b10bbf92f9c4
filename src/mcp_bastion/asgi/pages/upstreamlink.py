"""The pages where a user links an upstream account (``delegation.oauthlink``): sign in as the gateway user
the link was made for, go to the upstream's authorization server, come back to the callback.

Invariants:
- the sign-in must be the link's own principal (same issuer, same subject): a link forwarded to someone
  else is refused, and so is a correct password of another account;
- the callback completes only in the browser that signed in (a random cookie whose SHA-256 is stored with
  the link, ``__Host-``, HttpOnly, SameSite=Lax), once (the link is removed when taken);
- the form is CSRF-protected by a token stored with the link; passwords are checked by the user directory
  with its constant-work failure path; nothing of the upstream's answer is shown back;
- every value checked here lives in the shared database (``LinkStore``), none in a per-replica key, so
  the page, the sign-in and the callback may each reach a different replica.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Final, Protocol

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mcp_bastion.asgi.pages.forms import read_form
from mcp_bastion.asgi.pages.render import PageError, csrf_refused, error_page, origin_source, page, security_headers
from mcp_bastion.delegation.oauthlink import (
    CALLBACK_PATH,
    LINK_PATH,
    LinkStore,
    PendingLink,
    UpstreamOAuth,
    same_browser,
)
from mcp_bastion.errors import Unavailable
from mcp_bastion.oauth.service import OAuthError, User

COOKIE: Final = "__Host-bastion-upstream-link"
COOKIE_SECONDS: Final = 600


class Users(Protocol):
    async def authenticate(self, username: str, password: str) -> User: ...


def _expired() -> PageError:
    return PageError(
        404, "link_unknown", "This link has expired", "Ask your application again: it will give you a fresh link."
    )


def link_routes(upstreams: Mapping[str, UpstreamOAuth], links: LinkStore, users: Users, *, issuer: str) -> list[Route]:
    async def show(request: Request) -> Response:
        link = await links.get(request.path_params["link_id"])
        if link is None or link.upstream not in upstreams:
            return error_page(_expired())
        return _form(link)

    async def sign_in(request: Request) -> Response:
        link_id = request.path_params["link_id"]
        try:
            form = await read_form(request)
            link = await links.get(link_id)
            if link is None or link.upstream not in upstreams:
                raise _expired()
            if not hmac.compare_digest(form.one("csrf").encode(), link.form_token.encode()):
                raise csrf_refused()
        except PageError as error:
            return error_page(error)
        try:
            user = await users.authenticate(form.one("username"), form.one("password"))
        except OAuthError:  # the directory's refusal (never says which part was wrong)
            return _form(link, failed="Wrong username or password.", status=401)
        if link.principal.issuer != issuer or user.id != link.principal.subject:
            return _form(link, failed="This link was made for another account.", status=403)
        marked = await links.mark_started(link)
        if marked is None:  # expired or completed meanwhile
            return error_page(_expired())
        started, cookie = marked
        oauth = upstreams[link.upstream]
        try:
            target = await oauth.authorization_url(started)
        except Unavailable:
            return error_page(
                PageError(503, "upstream_as_unavailable", "Try again later", "The server is unavailable.")
            )
        source = origin_source(target)
        headers = {**security_headers((source,) if source else ()), "location": target}
        response = Response(status_code=303, headers=headers)
        response.set_cookie(
            COOKIE, cookie, max_age=COOKIE_SECONDS, path="/", secure=True, httponly=True, samesite="lax"
        )
        return response

    async def callback(request: Request) -> Response:
        query = request.query_params
        link = await links.take_by_state(query.get("state", ""))
        if link is None or link.upstream not in upstreams:
            return error_page(_expired())
        if not same_browser(link, request.cookies.get(COOKIE, "")):
            refused = PageError(
                403,
                "link_other_browser",
                "Finish where you started",
                "This sign-in was started in another browser. Ask your application for a fresh link.",
            )
            return error_page(refused)
        if query.get("error") or not query.get("code"):
            declined = PageError(400, "link_declined", "Not linked", "The sign-in was cancelled or refused.")
            return error_page(declined)
        try:
            await upstreams[link.upstream].complete(link, query["code"], query.get("iss"))
        except (Unavailable, ValueError):
            failed = PageError(502, "link_failed", "Not linked", "The server did not accept the sign-in. Try again.")
            return error_page(failed)
        response = page("linked.html", {"upstream": link.upstream})
        response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="lax")
        return response

    return [
        Route(LINK_PATH + "{link_id}", show, methods=["GET"]),
        Route(LINK_PATH + "{link_id}", sign_in, methods=["POST"]),
        Route(CALLBACK_PATH, callback, methods=["GET"]),
    ]


def _form(link: PendingLink, *, failed: str = "", status: int = 200) -> Response:
    context = {"upstream": link.upstream, "csrf": link.form_token, "action": LINK_PATH + link.id, "failed": failed}
    return page("link.html", context, status=status)
