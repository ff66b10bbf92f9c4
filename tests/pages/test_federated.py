"""Federated login through the pages, over ASGI, with a fake ``FederatedLogin``: the "Sign in with …" button,
the sealed state cookie, and the callback's refusals (each an error page, the cookie deleted every time)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from mcp_bastion.asgi.pages.csrf import Signer, b64decode
from mcp_bastion.asgi.pages.statecookie import StateCookies
from mcp_bastion.oauth.federation import FederationState, OIDCProvider
from mcp_bastion.oauth.refusal import Refusal
from tests.pages.fakes import IDP_ISSUER, FakeFederatedLogin, checkboxes, hidden, inputs, reason
from tests.pages.harness import CLIENT_ID, REDIRECT_URI, Harness, consent_form

pytestmark = pytest.mark.anyio

START = "/authorize/federated/corp"
CALLBACK = "/authorize/federated/corp/callback"
COOKIE = "__Secure-bastion-federation"
BROWSER = "__Host-bastion-browser"
KEY = b"k" * 32
"""The harness's page session key."""


@pytest.fixture
def idp(harness: Harness) -> FakeFederatedLogin:
    return harness.add_idp("corp")


async def press_button(
    harness: Harness, browser: httpx.AsyncClient, name: str = "corp", **query: str
) -> httpx.Response:
    """Open the login page and press "Sign in with …" for ``name``."""
    page = await harness.open_login(browser, **query)
    return await browser.post(f"/authorize/federated/{name}", data=hidden(page.text))


async def come_back(browser: httpx.AsyncClient, query: str = "state=state-1&code=idp-code&iss=x") -> httpx.Response:
    """The IdP's redirect to our callback, in the same browser."""
    return await browser.get(f"{CALLBACK}?{query}")


def attributes(set_cookie: str) -> set[str]:
    return {part.strip().lower() for part in set_cookie.split(";")[1:]}


def state_cookie(response: httpx.Response) -> str:
    [header] = [h for h in response.headers.get_list("set-cookie") if h.startswith(f"{COOKIE}=")]
    return header


def assert_deleted(response: httpx.Response) -> None:
    """The state cookie is expired by this response, with the attributes that make a browser apply it."""
    header = state_cookie(response)
    assert {"max-age=0", f"path={CALLBACK}", "secure", "httponly"} <= attributes(header)


# -- the login page -----------------------------------------------------------------------------------


async def test_login_page_has_a_button_per_idp_and_its_origin_in_form_action(harness: Harness) -> None:
    harness.add_idp("corp", display_name="Corp SSO", authorization_endpoint="https://login.corp.example:8443/auth")
    harness.add_idp("partner", display_name="Partner <ID>", discovered=False)
    async with harness.browser() as browser:
        page = await harness.open_login(browser)
    # The password form stays the first form (Enter in a field submits it, and scripts rely on it).
    assert page.text.index('action="/authorize/login"') < page.text.index(f'action="{START}"')
    buttons = [i for i in inputs(page.text) if i["tag"] == "button" and "federated" in i.get("class", "")]
    assert [("disabled" in b) for b in buttons] == [False, True]
    assert "Sign in with Corp SSO" in page.text
    assert "Sign in with Partner &lt;ID&gt;" in page.text  # escaped like every other value
    assert "Partner &lt;ID&gt; is temporarily unavailable." in page.text
    csp = page.headers["content-security-policy"]
    form_action = next(d for d in csp.split("; ") if d.startswith("form-action "))
    assert form_action.split()[1:] == [
        "'self'",
        "https://127.0.0.1:8765",
        "http://127.0.0.1:8765",
        "https://login.corp.example:8443",
    ]


async def test_without_idps_the_login_page_is_unchanged(harness: Harness) -> None:
    async with harness.browser() as browser:
        page = await harness.open_login(browser)
    assert "Sign in with" not in page.text
    assert "federated" not in page.text


# -- the whole journey ----------------------------------------------------------------------------------


async def test_button_idp_callback_consent_approve(harness: Harness, idp: FakeFederatedLogin) -> None:
    async with harness.browser() as browser:
        pressed = await press_button(harness, browser)
        assert pressed.status_code == 303
        assert pressed.headers["location"] == "https://login.idp.example/authorize?state=state-1"
        [started] = idp.started
        assert started.pending_id in harness.service._pending
        cookie = state_cookie(pressed)
        assert {"httponly", "secure", "samesite=lax", f"path={CALLBACK}", "max-age=600"} <= attributes(cookie)
        # Encrypted: neither the PKCE verifier nor the nonce can be read from the cookie.
        body = cookie.split("=", 1)[1].split(";")[0].split(".")[0]
        assert b"verifier-1" not in b64decode(body)
        assert b"nonce-1" not in b64decode(body)

        back = await come_back(browser)
        assert back.status_code == 303
        assert back.headers["location"].startswith("/authorize/consent?pending=")
        assert_deleted(back)
        assert idp.finished == [{"state": "state-1", "code": "idp-code", "iss": "x"}]

        page = await browser.get(back.headers["location"])
        assert page.status_code == 200
        assert "Signed in as</dt>\n    <dd>alice@corp (via Corp SSO)</dd>" in page.text
        approve = await browser.post("/authorize/consent", data=consent_form(page, "approve", ["files:read"]))
    assert approve.status_code == 303
    assert approve.headers["location"].startswith(REDIRECT_URI + "?code=")
    [approval] = harness.service.approvals
    assert approval.user.id == f"{IDP_ISSUER}#248289761001"
    assert approval.user.roles == frozenset({"analyst"})
    assert approval.scopes == frozenset({"files:read"})


async def test_idp_roles_decide_what_may_be_granted(harness: Harness) -> None:
    harness.add_idp("corp", roles=frozenset({"admin"}))
    async with harness.browser() as browser:
        await press_button(harness, browser)
        back = await come_back(browser)
        page = await browser.get(back.headers["location"])
    assert checkboxes(page.text) == ["files:read", "files:write", "admin"]


async def test_remembered_consent_goes_straight_back_to_the_client(harness: Harness, idp: FakeFederatedLogin) -> None:
    harness.service.remember(idp.user, CLIENT_ID, frozenset({"files:read"}))
    async with harness.browser() as browser:
        await press_button(harness, browser, scope="files:read")
        back = await come_back(browser)
    assert back.status_code == 303
    assert back.headers["location"].startswith(REDIRECT_URI + "?code=")
    assert_deleted(back)
    assert [a.user for a in harness.service.approvals] == [idp.user]


@pytest.mark.parametrize(
    "federation",
    [
        pytest.param("removed", id="idp-removed-from-settings"),
        pytest.param("replaced", id="name-now-another-issuer"),
    ],
)
async def test_federated_session_holds_only_while_its_idp_is_configured(harness: Harness, federation: str) -> None:
    harness.add_idp("corp")
    async with harness.browser() as browser:
        await press_button(harness, browser)
        back = await come_back(browser)
    # The gateway restarts with other settings (same page key); the browser comes back to the consent page.
    if federation == "removed":
        harness.app = harness.build_app({})
    else:
        other = harness.add_idp("corp")
        other.provider = OIDCProvider(
            issuer="https://other-idp.example", client_id="c", redirect_uri="https://bastion.test/cb"
        )
    async with harness.browser() as same_browser:
        same_browser.cookies = browser.cookies
        page = await same_browser.get(back.headers["location"])
    assert page.status_code == 403
    assert reason(page.text) == "session_invalid"


# -- the button's refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize("token", [pytest.param(None, id="missing"), pytest.param("forged", id="wrong")])
async def test_button_without_a_valid_csrf_token_is_refused(
    harness: Harness, idp: FakeFederatedLogin, token: str | None
) -> None:
    async with harness.browser() as browser:
        page = await harness.open_login(browser)
        fields = {k: v for k, v in hidden(page.text).items() if k != "csrf"}
        if token is not None:
            fields["csrf"] = token
        response = await browser.post(START, data=fields)
    assert (response.status_code, reason(response.text)) == (403, "csrf_invalid")
    assert "set-cookie" not in response.headers
    assert idp.started == []


async def test_button_for_an_expired_authorization_is_refused(harness: Harness, idp: FakeFederatedLogin) -> None:
    async with harness.browser() as browser:
        page = await harness.open_login(browser)
        harness.clock.now += 301
        response = await browser.post(START, data=hidden(page.text))
    assert (response.status_code, reason(response.text)) == (400, "invalid_request")
    assert "set-cookie" not in response.headers
    assert idp.started == []


async def test_button_of_an_undiscovered_idp_is_an_error_page(harness: Harness) -> None:
    harness.add_idp("corp", discovered=False)
    async with harness.browser() as browser:
        response = await press_button(harness, browser)
    assert (response.status_code, reason(response.text)) == (503, "idp_not_discovered")
    assert "set-cookie" not in response.headers


async def test_unknown_idp_and_wrong_method(harness: Harness, idp: FakeFederatedLogin) -> None:
    async with harness.browser() as browser:
        unknown = await press_button(harness, browser, name="nope")
        unknown_callback = await browser.get("/authorize/federated/nope/callback?state=s&code=c")
        get_start = await browser.get(START)
    assert (unknown.status_code, reason(unknown.text)) == (404, "idp_unknown")
    assert (unknown_callback.status_code, reason(unknown_callback.text)) == (404, "idp_unknown")
    assert (get_start.status_code, reason(get_start.text)) == (405, "method_not_allowed")
    assert idp.started == []


# -- the callback's refusals: an error page, never a redirect; the cookie always deleted -------------


async def test_callback_without_the_cookie_is_refused(harness: Harness, idp: FakeFederatedLogin) -> None:
    async with harness.browser() as browser:
        await press_button(harness, browser)
    async with harness.browser() as stranger:  # another browser: the IdP's redirect without our cookie
        await harness.open_login(stranger)
        response = await come_back(stranger)
    assert (response.status_code, reason(response.text)) == (400, "federation_state_missing")
    assert "location" not in response.headers
    assert_deleted(response)
    assert idp.finished == []


def _another_key(nonce: str, state: FederationState) -> str:
    return StateCookies(Signer(b"x" * 32)).seal("corp", nonce, state)


def _another_idp(nonce: str, state: FederationState) -> str:
    return StateCookies(Signer(KEY)).seal("partner", nonce, state)


def _another_browser(nonce: str, state: FederationState) -> str:
    # A genuine cookie, sealed by the server for someone else's browser (planted by a sibling subdomain, say).
    return StateCookies(Signer(KEY)).seal("corp", "A" * 43, state)


def _flip(index: int) -> Callable[[str], str]:
    def flip(cookie: str) -> str:
        char = cookie[index]
        return cookie[:index] + ("B" if char != "B" else "C") + cookie[index + 1 :]

    return flip


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda cookie, nonce, state: _flip(5)(cookie), id="body-changed"),
        pytest.param(lambda cookie, nonce, state: _flip(-3)(cookie), id="mac-changed"),
        pytest.param(lambda cookie, nonce, state: cookie.split(".")[0], id="mac-removed"),
        pytest.param(lambda cookie, nonce, state: "garbage", id="garbage"),
        pytest.param(lambda cookie, nonce, state: cookie + "A" * 3000, id="oversized"),
        pytest.param(lambda cookie, nonce, state: _another_key(nonce, state), id="sealed-with-another-key"),
        pytest.param(lambda cookie, nonce, state: _another_idp(nonce, state), id="sealed-for-another-idp"),
        pytest.param(lambda cookie, nonce, state: _another_browser(nonce, state), id="sealed-for-another-browser"),
    ],
)
async def test_callback_with_a_tampered_cookie_is_refused(
    harness: Harness, idp: FakeFederatedLogin, forge: Callable[[str, str, FederationState], str]
) -> None:
    async with harness.browser() as browser:
        await press_button(harness, browser)
        cookie, nonce = browser.cookies[COOKIE], browser.cookies[BROWSER]
        forged = forge(cookie, nonce, idp.started[0])
        browser.cookies.set(COOKIE, forged, domain="bastion.test", path=CALLBACK)
        response = await come_back(browser)
    assert (response.status_code, reason(response.text)) == (400, "federation_state_invalid")
    assert "location" not in response.headers
    assert_deleted(response)
    assert idp.finished == []
    assert harness.service.approvals == []


async def test_callback_state_mismatch_is_an_error_page(harness: Harness, idp: FakeFederatedLogin) -> None:
    async with harness.browser() as browser:
        await press_button(harness, browser)
        response = await come_back(browser, "state=someone-elses-state&code=idp-code")
    assert (response.status_code, reason(response.text)) == (400, "state_mismatch")
    assert "location" not in response.headers
    assert_deleted(response)
    assert [cookie for cookie in response.headers.get_list("set-cookie") if "bastion-login-" in cookie] == []


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("state=state-1&state=state-2&code=idp-code", id="state-twice"),
        pytest.param("state=state-1&code=idp-code&code=attacker-code", id="code-twice"),
    ],
)
async def test_callback_with_a_duplicated_parameter_is_refused(
    harness: Harness, idp: FakeFederatedLogin, query: str
) -> None:
    async with harness.browser() as browser:
        await press_button(harness, browser)
        response = await come_back(browser, query)
    assert (response.status_code, reason(response.text)) == (400, "callback_malformed")
    assert_deleted(response)
    assert idp.finished == []


@pytest.mark.parametrize(
    ("refusal", "status"),
    [
        pytest.param(Refusal("access_denied", "idp_error", "SECRET-DETAIL", status=403), 403, id="user-cancelled"),
        pytest.param(Refusal("access_denied", "email_domain_forbidden", "SECRET-DETAIL", status=403), 403, id="domain"),
        pytest.param(
            Refusal("access_denied", "id_token_signature_invalid", "SECRET-DETAIL", status=403), 403, id="forged-token"
        ),
        pytest.param(Refusal("invalid_request", "iss_mismatch", "SECRET-DETAIL"), 400, id="mix-up"),
        pytest.param(Refusal("server_error", "token_request_refused", "SECRET-DETAIL", status=502), 502, id="idp-5xx"),
        pytest.param(
            Refusal("temporarily_unavailable", "idp_unreachable", "SECRET-DETAIL", status=503), 503, id="idp-down"
        ),
    ],
)
async def test_callback_refused_by_the_login_is_an_error_page(
    harness: Harness, idp: FakeFederatedLogin, refusal: Refusal, status: int
) -> None:
    idp.refusal = refusal
    async with harness.browser() as browser:
        await press_button(harness, browser)
        response = await come_back(browser)
    assert (response.status_code, reason(response.text)) == (status, refusal.reason)
    assert "Corp SSO" in response.text
    assert "SECRET-DETAIL" not in response.text  # the description is for the log only
    assert "location" not in response.headers
    assert_deleted(response)
    assert harness.service.approvals == []


async def test_authorization_expired_while_at_the_idp(harness: Harness, idp: FakeFederatedLogin) -> None:
    async with harness.browser() as browser:
        await press_button(harness, browser)
        harness.clock.now += 301  # the pending authorization lives 300 s, the login state 600 s
        response = await come_back(browser)
    assert (response.status_code, reason(response.text)) == (400, "invalid_request")
    assert_deleted(response)
    assert harness.service.approvals == []


async def test_second_use_of_the_callback_finds_no_cookie(harness: Harness, idp: FakeFederatedLogin) -> None:
    async with harness.browser() as browser:
        await press_button(harness, browser)
        first = await come_back(browser)
        again = await come_back(browser)
    assert first.status_code == 303
    assert (again.status_code, reason(again.text)) == (400, "federation_state_missing")
    assert len(idp.finished) == 1


async def test_insecure_cookies_have_no_prefix_and_no_secure_flag() -> None:
    harness = Harness(secure_cookies=False)
    harness.add_idp("corp")
    async with harness.browser() as browser:
        pressed = await press_button(harness, browser)
        [cookie] = pressed.headers.get_list("set-cookie")
        back = await come_back(browser)
    assert cookie.startswith("bastion-federation=")
    assert "secure" not in attributes(cookie)
    assert back.status_code == 303
