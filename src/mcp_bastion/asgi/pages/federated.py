"""Federated login on the pages: a "Sign in with <IdP>" button per configured OpenID Provider, and the two
routes that hand the browser to the IdP and take it back (``oauth.federation.FederatedLogin`` speaks OIDC).

1. ``POST /authorize/federated/<name>``: the button, a form with the CSRF token and the pending id like the
   password form. ``login.start(pending_id)``; its state goes into the sealed cookie (``statecookie``):
   HttpOnly, Secure, SameSite=Lax, Path = the callback path, Max-Age = the state's lifetime; 303 to the IdP.
2. ``GET /authorize/federated/<name>/callback``: the IdP's redirect. The cookie is opened and, whatever the
   outcome, deleted; ``login.finish`` validates the response (state, RFC 9207 iss, code -> tokens, ID token)
   and maps the claims to a ``User`` (``id = "<issuer>#<sub>"``, roles from the configured mapping); then
   the same step as a local login (``routes.Pages.signed_in``): the browser's login session is bound to
   (user, pending) and the user goes on to consent, or straight back to the client on remembered consent.

SameSite=Lax, not Strict: the callback is a top-level GET navigation coming from the IdP's site, which does
not carry Strict cookies. Lax cookies ride on exactly that, and on no cross-site POST or subresource.

One cookie per IdP rather than one per login: the browser sends back every cookie on the path, and a user
pressing the button again and again would pile them up until the request header is refused. The price: of
two logins with the same IdP in two tabs at once, the first to come back fails (state_mismatch).

Every refusal is an error page with a stable reason (``Refusal.reason``, or one of ``REASONS``), never a
redirect: the client's redirect URI answers the client's request, not our conversation with the IdP.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from starlette.requests import Request
from starlette.responses import Response

from mcp_bastion.asgi.pages.csrf import CSRF, is_nonce
from mcp_bastion.asgi.pages.forms import read_form
from mcp_bastion.asgi.pages.render import PageError, csrf_refused, error_page, origin_source, redirect
from mcp_bastion.asgi.pages.session import CookieJar, FederatedIdentity, LoginSession
from mcp_bastion.asgi.pages.statecookie import InvalidState, StateCookies
from mcp_bastion.oauth.federation import STATE_LIFETIME_SECONDS, FederationState, OIDCProvider
from mcp_bastion.oauth.oidc_client import ProviderMetadata
from mcp_bastion.oauth.refusal import Refusal
from mcp_bastion.oauth.service import AuthorizationService, OAuthError, PendingAuthorization, User

log = logging.getLogger("mcp_bastion.asgi.pages")

START_ROUTE: Final = "/authorize/federated/{name}"
CALLBACK_ROUTE: Final = "/authorize/federated/{name}/callback"

REASONS: Final = frozenset(
    {"idp_unknown", "callback_malformed", "federation_state_missing", "federation_state_invalid"}
)
"""Reasons of this module's own refusals; the others are ``oauth.federation.REASONS``."""

_ACCOUNT_REFUSED: Final = frozenset(
    {"email_domain_forbidden", "username_missing", "username_invalid", "claims_malformed"}
)
_START_AGAIN = "Please start again from the application."


def start_path(name: str) -> str:
    return START_ROUTE.format(name=name)


def callback_path(name: str) -> str:
    """Where the IdP sends the browser back; the redirect URI registered at the IdP is the public URL + this."""
    return CALLBACK_ROUTE.format(name=name)


class FederatedLogin(Protocol):
    """What the pages use of ``oauth.federation.FederatedLogin`` (tests pass a fake)."""

    @property
    def provider(self) -> OIDCProvider: ...

    @property
    def metadata(self) -> ProviderMetadata | None:
        """None until discovery succeeded: the button is then shown, disabled."""
        ...

    def start(self, pending_id: str) -> tuple[str, FederationState]: ...

    async def finish(self, params: Mapping[str, str], state: FederationState) -> tuple[User, str]: ...


SignedIn = Callable[[User, PendingAuthorization, FederatedIdentity | None], Awaitable[Response]]
"""The step after any successful login: session, then consent (``routes.Pages.signed_in``)."""


@dataclass(frozen=True, slots=True)
class Button:
    """One "Sign in with …" button of the login page."""

    action: str
    label: str
    available: bool


def buttons(logins: Mapping[str, FederatedLogin]) -> list[Button]:
    return [
        Button(start_path(name), login.provider.display_name, login.metadata is not None)
        for name, login in logins.items()
    ]


def form_sources(logins: Mapping[str, FederatedLogin]) -> tuple[str, ...]:
    """CSP ``form-action`` sources for the login page: each usable IdP's authorization endpoint origin.

    The button's POST is answered by a 303 to the IdP, and Chromium checks ``form-action`` on every hop of a
    form submission's redirects (tests/pages/test_browser.py shows it blocking the hop when unlisted).
    """
    sources: list[str] = []
    for login in logins.values():
        metadata = login.metadata
        source = origin_source(metadata.authorization_endpoint) if metadata is not None else None
        if source is not None and source not in sources:
            sources.append(source)
    return tuple(sources)


def federated_user(logins: Mapping[str, FederatedLogin], session: LoginSession) -> User | None:
    """The user of a federated login session, or None when its IdP is no longer the one configured."""
    identity = session.federated
    login = logins.get(identity.provider) if identity is not None else None
    # After a configuration change the name might point at another IdP: that IdP never vouched for this id.
    if identity is None or login is None or not session.user_id.startswith(login.provider.issuer + "#"):
        return None
    return User(id=session.user_id, username=identity.username, roles=identity.roles)


def signed_in_via(logins: Mapping[str, FederatedLogin], session: LoginSession) -> str | None:
    """The display name of the IdP the session's user signed in with; None for a local user."""
    login = logins.get(session.federated.provider) if session.federated is not None else None
    return login.provider.display_name if login is not None else None


def _refused(refusal: Refusal, display_name: str) -> PageError:
    """The error page for a failed federated login; the description (for the log) is not shown."""
    if refusal.reason == "idp_error":
        message = f"The sign-in at {display_name} was cancelled or refused. {_START_AGAIN}"
    elif refusal.reason in _ACCOUNT_REFUSED:
        message = f"Your {display_name} account cannot be used to sign in here."
    elif refusal.error == "access_denied":
        message = f"The answer from {display_name} could not be verified. {_START_AGAIN}"
    elif refusal.error == "invalid_request":
        message = (
            f"This sign-in with {display_name} does not belong to this browser, or it took too long. {_START_AGAIN}"
        )
    else:
        message = f"{display_name} could not be reached or answered unexpectedly. Please try again later."
    status = refusal.status if 400 <= refusal.status < 600 else 400
    return PageError(status, refusal.reason, "Sign-in did not complete", message)


def _state_refused(reason: str) -> PageError:
    message = f"This sign-in does not belong to this browser, or it took too long. {_START_AGAIN}"
    return PageError(400, reason, "Sign-in did not complete", message)


@dataclass(frozen=True, slots=True)
class FederatedRoutes:
    """The two routes' handlers; ``signed_in`` continues exactly like a local login."""

    logins: Mapping[str, FederatedLogin]
    service: AuthorizationService
    csrf: CSRF
    jar: CookieJar
    cookies: StateCookies
    signed_in: SignedIn

    def _login(self, request: Request) -> tuple[str, FederatedLogin]:
        name: str = request.path_params["name"]
        login = self.logins.get(name)
        if login is None:
            raise PageError(404, "idp_unknown", "Something went wrong", "There is no such sign-in option.")
        return name, login

    async def start(self, request: Request) -> Response:
        name, login = self._login(request)
        form = await read_form(request)
        pending_id = form.one("pending")
        nonce = request.cookies.get(self.jar.browser, "")
        if not (is_nonce(nonce) and self.csrf.check_login(form.one("csrf"), nonce, pending_id)):
            raise csrf_refused()
        pending = await self.service.pending(pending_id)
        try:
            url, state = login.start(pending.id)
        except Refusal as refusal:  # not discovered (yet): the button was shown disabled
            raise _refused(refusal, login.provider.display_name) from None
        response = redirect(url)
        cookie = self.cookies.seal(name, nonce, state)
        self.jar.set(response, self.jar.federation, cookie, max_age=STATE_LIFETIME_SECONDS, path=callback_path(name))
        return response

    async def callback(self, request: Request) -> Response:
        name: str = request.path_params["name"]
        try:
            response = await self._callback(request)
        except PageError as error:
            response = error_page(error)
        except OAuthError as error:  # the pending authorization expired while the user was at the IdP, say
            reason = error.reason if isinstance(error, Refusal) else error.error
            status = error.status if 400 <= error.status < 500 else 400
            message = error.description or "This sign-in request can't be completed."
            response = error_page(PageError(status, reason, "This sign-in request can't be completed", message))
        # Whatever happened, this state is spent: presented again it could only be a replay.
        self.jar.delete(response, self.jar.federation, path=callback_path(name))
        return response

    async def _callback(self, request: Request) -> Response:
        name, login = self._login(request)
        items = request.query_params.multi_items()
        params = dict(items)
        if len(params) != len(items):
            # Which state or code would the IdP have meant? Guessing is how parameter pollution works.
            raise PageError(
                400, "callback_malformed", "Sign-in did not complete", f"A parameter came twice. {_START_AGAIN}"
            )
        cookie = request.cookies.get(self.jar.federation, "")
        nonce = request.cookies.get(self.jar.browser, "")
        if not cookie or not is_nonce(nonce):
            raise _state_refused("federation_state_missing")
        try:
            state = self.cookies.open(name, nonce, cookie)
        except InvalidState:
            raise _state_refused("federation_state_invalid") from None
        try:
            user, pending_id = await login.finish(params, state)
        except Refusal as refusal:
            log.warning("federated login via %s refused: %s: %s", name, refusal.reason, refusal.description)
            raise _refused(refusal, login.provider.display_name) from None
        pending = await self.service.pending(pending_id)
        log.info("federated login via %s: %s (%s)", name, user.id, user.username)
        return await self.signed_in(user, pending, FederatedIdentity(name, user.username, user.roles))
