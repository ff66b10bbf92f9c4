"""The login and consent pages of the authorization server (issue 4), as Starlette routes.

Flow (every state change is a POST; GETs only show things):

1. ``GET /authorize`` validates the request through ``AuthorizationService.begin``. A refusal whose redirect
   URI the service verified goes back to the client (303, RFC 6749 §4.1.2.1, with RFC 9207 ``iss``); any
   other refusal is an error page, never a redirect (an unverified redirect URI is an open redirect).
   Otherwise: the login form, its CSRF token bound to this browser's nonce cookie and the pending id.
2. ``POST /authorize/login`` checks CSRF, asks the rate limiter, then the user directory. A wrong username
   or password gives the same message for both (401). On success: if the user's remembered consent covers
   the request, approve at once (303 to the client); else set the signed login-session cookie and 303 to
3. ``GET /authorize/consent?pending=…``: who asks (client name, kind, redirect host), for what (each scope in
   words; only the scopes this user may grant are checkboxes), Approve / Deny;
4. ``POST /authorize/consent`` requires the login session for that pending id and a CSRF token bound to the
   session, then approves (with the chosen scopes ∩ allowed) or denies: 303 to the URL the service returns.

Step 2 has an alternative per configured external IdP: "Sign in with …" (``federated.py``), whose callback
joins the flow where a successful password login does (``signed_in``).

Refusals raise ``PageError`` (or the service's ``OAuthError``); ``_guarded`` turns them into a response in
one place. Every response carries the headers of ``render.security_headers``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mcp_bastion.asgi.pages.csrf import CSRF, Signer, is_nonce, new_nonce
from mcp_bastion.asgi.pages.federated import (
    CALLBACK_ROUTE,
    START_ROUTE,
    FederatedLogin,
    FederatedRoutes,
    buttons,
    federated_user,
    form_sources,
    signed_in_via,
)
from mcp_bastion.asgi.pages.forms import read_form
from mcp_bastion.asgi.pages.limiter import LoginLimiter, MemoryLoginLimiter
from mcp_bastion.asgi.pages.render import (
    STATIC_CSS_PATH,
    PageError,
    csrf_refused,
    error_page,
    page,
    redirect,
    redirect_sources,
    stylesheet,
)
from mcp_bastion.asgi.pages.session import CookieJar, FederatedIdentity, InvalidSession, LoginSession, Sessions
from mcp_bastion.asgi.pages.statecookie import StateCookies
from mcp_bastion.oauth.service import (
    AuthorizationService,
    Consent,
    OAuthError,
    PendingAuthorization,
    User,
    UserDirectory,
)

log = logging.getLogger("mcp_bastion.asgi.pages")

AUTHORIZE_PATH = "/authorize"
LOGIN_PATH = "/authorize/login"
CONSENT_PATH = "/authorize/consent"

KIND_WORDS = {
    "static": "Registered by your administrator.",
    "registered": "Registered itself automatically; your administrator has not reviewed it.",
    "metadata": "Identified by its published client metadata document.",
}

Handler = Callable[[Request], Awaitable[Response]]

ANY_METHOD = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
"""Routes accept these and answer the ones they do not serve with our own 405 page (with our headers)."""


def _session_refused() -> PageError:
    return PageError(
        403,
        "session_invalid",
        "Your sign-in has expired",
        "This approval does not belong to a sign-in in this browser, or the sign-in has expired. "
        "Please start again from the application.",
    )


def with_query(url: str, params: Mapping[str, str | None]) -> str:
    """``url`` with ``params`` (those not ``None``) appended to its query, keeping what is there."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query += [(key, value) for key, value in params.items() if value is not None]
    return urlunsplit(parts._replace(query=urlencode(query)))


def remembered_covers(consent: Consent | None, user: User, pending: PendingAuthorization) -> bool:
    """Whether a remembered consent covers this request: same user, client and resource, not revoked, every
    requested scope remembered. (The caller also requires every requested scope to be still allowed.)"""
    return (
        consent is not None
        and not consent.revoked
        and consent.user_id == user.id
        and consent.client_id == pending.client.client_id
        and consent.resource in ("", pending.resource)
        and frozenset(pending.scopes) <= consent.scopes
    )


@dataclass(frozen=True, slots=True)
class Pages:
    service: AuthorizationService
    users: UserDirectory
    issuer: str
    limiter: LoginLimiter
    csrf: CSRF
    sessions: Sessions
    clock: Callable[[], float]
    federation: Mapping[str, FederatedLogin]
    """External IdPs by their name in the settings; empty when only local users log in."""

    # -- GET /authorize -------------------------------------------------------------------------------

    async def authorize(self, request: Request) -> Response:
        items = request.query_params.multi_items()
        query = dict(items)
        if len(query) != len(items):
            # RFC 6749 §3.1: parameters must not repeat. Which value would the client have meant?
            raise OAuthError("invalid_request", "A parameter was sent more than once.")
        pending = await self.service.begin(query)
        nonce = request.cookies.get(self.sessions.jar.browser, "")
        if not is_nonce(nonce):
            nonce = new_nonce()
        response = self._login_page(pending, nonce)
        # A browser-session cookie (no Max-Age): it only anchors CSRF tokens, so it may die with the browser.
        self.sessions.jar.set(response, self.sessions.jar.browser, nonce, max_age=None)
        return response

    def _login_page(
        self, pending: PendingAuthorization, nonce: str, *, status: int = 200, username: str = "", failed: bool = False
    ) -> Response:
        context = {
            "client": pending.client,
            "resource": pending.resource,
            "pending_id": pending.id,
            "csrf": self.csrf.login_token(nonce, pending.id),
            "username": username,
            "failed": failed,
            "action": LOGIN_PATH,
            "providers": buttons(self.federation),
        }
        # The login POST may end in a redirect to the client (remembered consent): allow its origin; each
        # "Sign in with …" POST ends in a redirect to its IdP: allow those too.
        targets = (*redirect_sources(pending.client.redirect_host), *form_sources(self.federation))
        return page("login.html", context, status=status, form_targets=targets)

    # -- POST /authorize/login ------------------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        form = await read_form(request)
        pending_id = form.one("pending")
        nonce = request.cookies.get(self.sessions.jar.browser, "")
        if not (is_nonce(nonce) and self.csrf.check_login(form.one("csrf"), nonce, pending_id)):
            raise csrf_refused()
        pending = await self.service.pending(pending_id)

        username, password = form.one("username"), form.one("password")
        address = request.client.host if request.client is not None else ""
        wait = await self.limiter.check(username, address)
        if wait > 0:
            raise PageError(
                429,
                "login_rate_limited",
                "Too many attempts",
                "Too many sign-in attempts. Please wait a little and try again.",
                headers={"retry-after": str(max(1, math.ceil(wait)))},
            )
        try:
            user = await self.users.authenticate(username, password)
            if user.disabled:  # the directory should have refused already; do not rely on it
                raise OAuthError("access_denied")
        except OAuthError:
            await self.limiter.failed(username, address)
            return self._login_page(pending, nonce, status=401, username=username, failed=True)
        await self.limiter.succeeded(username, address)
        return await self.signed_in(user, pending, None)

    async def signed_in(
        self, user: User, pending: PendingAuthorization, federated: FederatedIdentity | None
    ) -> Response:
        """After a successful login, local or federated: approve at once on remembered consent, else bind a
        login session for (user, pending) to this browser and go to the consent page."""
        allowed = await self.service.allowed_scopes(user, pending)
        remembered = await self.service.consent(user, pending.client.client_id)
        requested = frozenset(pending.scopes)
        if remembered_covers(remembered, user, pending) and requested <= allowed:
            return redirect(await self.service.approve(pending.id, user, requested))

        now = self.clock()
        session = self.sessions.new(
            user.id, pending.id, now=now, pending_expires_at=pending.expires_at, federated=federated
        )
        response = redirect(f"{CONSENT_PATH}?pending={quote(pending.id, safe='')}")
        max_age = max(0, math.floor(session.expires_at - now))
        self.sessions.jar.set(
            response, self.sessions.cookie_name(pending.id), self.sessions.seal(session), max_age=max_age
        )
        return response

    # -- GET and POST /authorize/consent --------------------------------------------------------------

    def _session(self, request: Request, pending_id: str) -> LoginSession:
        cookie = request.cookies.get(self.sessions.cookie_name(pending_id))
        try:
            return self.sessions.open(cookie, pending_id, now=self.clock())
        except InvalidSession:
            raise _session_refused() from None

    async def _session_user(self, session: LoginSession) -> User:
        if session.federated is not None:
            # The IdP is the directory for this user: who it said they are travels in the signed session.
            user = federated_user(self.federation, session)
        else:
            user = await self.users.get(session.user_id)
        if user is None or user.disabled:
            raise _session_refused()
        return user

    async def consent_page(self, request: Request) -> Response:
        pending_id = request.query_params.get("pending", "")
        session = self._session(request, pending_id)
        user = await self._session_user(session)
        pending = await self.service.pending(pending_id)
        allowed = await self.service.allowed_scopes(user, pending)
        scopes = [
            {"name": scope, "description": pending.scope_descriptions.get(scope, scope), "allowed": scope in allowed}
            for scope in pending.scopes
        ]
        context = {
            "client": pending.client,
            "kind": KIND_WORDS.get(pending.client.kind, pending.client.kind),
            "show_client_id": pending.client.kind == "metadata",
            "resource": pending.resource,
            "user": user,
            "via": signed_in_via(self.federation, session),
            "grantable": [scope for scope in scopes if scope["allowed"]],
            "unavailable": [scope for scope in scopes if not scope["allowed"]],
            "pending_id": pending.id,
            "csrf": self.csrf.consent_token(session.nonce, pending.id),
            "action": CONSENT_PATH,
        }
        return page("consent.html", context, form_targets=redirect_sources(pending.client.redirect_host))

    async def consent(self, request: Request) -> Response:
        form = await read_form(request)
        pending_id = form.one("pending")
        session = self._session(request, pending_id)
        if not self.csrf.check_consent(form.one("csrf"), session.nonce, pending_id):
            raise csrf_refused()
        user = await self._session_user(session)
        action = form.one("action")
        if action == "approve":
            pending = await self.service.pending(pending_id)
            allowed = await self.service.allowed_scopes(user, pending)
            # Only what was asked, offered and allowed: a tampered form cannot add a scope.
            chosen = frozenset(form.all("scope")) & allowed & frozenset(pending.scopes)
            url = await self.service.approve(pending_id, user, chosen)
        elif action == "deny":
            url = await self.service.deny(pending_id)
        else:
            raise PageError(400, "form_malformed", "Something went wrong", "Please choose Approve or Deny.")
        response = redirect(url)
        self.sessions.jar.delete(response, self.sessions.cookie_name(pending_id))
        return response

    # -- refusals -------------------------------------------------------------------------------------

    def oauth_error(self, error: OAuthError) -> Response:
        if error.redirect_uri is not None:
            params = {
                "error": error.error,
                "error_description": error.description or None,
                "state": error.state,
                "iss": self.issuer,
            }
            return redirect(with_query(error.redirect_uri, params))
        status = error.status if 400 <= error.status < 500 else 400
        message = error.description or "The application sent an invalid sign-in request."
        return error_page(PageError(status, error.error, "This sign-in request can't be completed", message))

    def guarded(self, handlers: Mapping[str, Handler]) -> Handler:
        """One endpoint per path: dispatch on method, and render every refusal in one place."""
        allow = ", ".join(sorted(handlers))

        async def endpoint(request: Request) -> Response:
            method = "GET" if request.method == "HEAD" else request.method
            handler = handlers.get(method)
            try:
                if handler is None:
                    raise PageError(
                        405,
                        "method_not_allowed",
                        "Something went wrong",
                        "This page cannot be used that way.",
                        headers={"allow": allow},
                    )
                return await handler(request)
            except PageError as error:
                return error_page(error)
            except OAuthError as error:
                return self.oauth_error(error)

        return endpoint


async def _stylesheet(request: Request) -> Response:
    return stylesheet()


def page_routes(
    service: AuthorizationService,
    users: UserDirectory,
    *,
    issuer: str,
    secure_cookies: bool = True,
    login_limiter: LoginLimiter | None = None,
    session_key: bytes | None = None,
    clock: Callable[[], float] = time.time,
    federation: Mapping[str, FederatedLogin] | None = None,
) -> list[Route]:
    """The login and consent pages and their stylesheet.

    ``issuer`` is the RFC 9207 ``iss`` added to error redirects. ``secure_cookies`` (the default) makes the
    cookies ``Secure`` and ``__Host-`` prefixed; turn it off only for plain-HTTP development. Without
    ``login_limiter`` a per-process ``MemoryLoginLimiter`` is used (not shared between replicas).
    ``session_key`` (>= 32 bytes) signs sessions and CSRF tokens; without it a random per-process key is
    used, so replicas behind one load balancer need the same key passed in. ``clock`` is wall-clock
    seconds, the scale of ``PendingAuthorization.expires_at``. ``federation`` maps each external IdP's name
    (its URL slug) to its login; each gets a button and the routes of ``federated.py``.
    """
    if not secure_cookies:
        log.warning("login pages: cookies are not Secure and not __Host- prefixed (plain-HTTP development only)")
    signer = Signer(session_key)
    logins = dict(federation or {})
    pages = Pages(
        service=service,
        users=users,
        issuer=issuer,
        limiter=login_limiter if login_limiter is not None else MemoryLoginLimiter(),
        csrf=CSRF(signer),
        sessions=Sessions(signer, CookieJar(secure=secure_cookies)),
        clock=clock,
        federation=logins,
    )
    endpoints: list[tuple[str, str, dict[str, Handler]]] = [
        (AUTHORIZE_PATH, "authorize", {"GET": pages.authorize}),
        (LOGIN_PATH, "authorize_login", {"POST": pages.login}),
        (CONSENT_PATH, "authorize_consent", {"GET": pages.consent_page, "POST": pages.consent}),
        (STATIC_CSS_PATH, "stylesheet", {"GET": _stylesheet}),
    ]
    if logins:
        federated = FederatedRoutes(
            logins, service, pages.csrf, pages.sessions.jar, StateCookies(signer), signed_in=pages.signed_in
        )
        endpoints += [
            (START_ROUTE, "authorize_federated", {"POST": federated.start}),
            (CALLBACK_ROUTE, "authorize_federated_callback", {"GET": federated.callback}),
        ]
    return [Route(path, pages.guarded(handlers), methods=ANY_METHOD, name=name) for path, name, handlers in endpoints]
