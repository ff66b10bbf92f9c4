"""The login and consent flow through the pages, end to end over ASGI, against in-memory fakes."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from tests.pages.fakes import ISSUER, checkboxes, hidden
from tests.pages.harness import ADDRESS, CLIENT_ID, REDIRECT_URI, STATE, Harness, consent_form

pytestmark = pytest.mark.anyio


def query_of(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


async def test_login_consent_approve_redirects_with_code_state_and_iss(harness: Harness) -> None:
    async with harness.browser() as browser:
        login_page = await harness.open_login(browser)
        assert "Claude Code" in login_page.text
        assert set(hidden(login_page.text)) == {"pending", "csrf"}

        login = await harness.submit_login(browser, login_page)
        assert login.status_code == 303
        assert login.headers["location"].startswith("/authorize/consent?pending=")

        page = await browser.get(login.headers["location"])
        assert page.status_code == 200
        assert '<strong class="host">127.0.0.1:8765</strong>' in page.text
        assert "Read your files" in page.text
        assert "Create, change and delete your files" in page.text
        # alice may not grant "admin": it is listed, but without a checkbox.
        assert checkboxes(page.text) == ["files:read", "files:write"]
        assert "Administer the gateway" in page.text

        approve = await browser.post("/authorize/consent", data=consent_form(page, "approve", ["files:read"]))

    assert approve.status_code == 303
    location = approve.headers["location"]
    assert location.startswith(REDIRECT_URI + "?")
    assert query_of(location) == {"code": "code-1", "state": STATE, "iss": ISSUER}
    [approval] = harness.service.approvals
    assert approval.user == harness.alice
    assert approval.scopes == frozenset({"files:read"})


async def test_session_cookie_is_host_prefixed_secure_httponly_lax_and_deleted_after_use(harness: Harness) -> None:
    async with harness.browser() as browser:
        login_page = await harness.open_login(browser)
        [browser_cookie] = login_page.headers.get_list("set-cookie")
        assert browser_cookie.startswith("__Host-bastion-browser=")
        login = await harness.submit_login(browser, login_page)
        [session_cookie] = login.headers.get_list("set-cookie")
        page = await browser.get(login.headers["location"])
        approve = await browser.post("/authorize/consent", data=consent_form(page, "approve", []))
        [deleted] = approve.headers.get_list("set-cookie")

    for cookie in (browser_cookie, session_cookie):
        attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
        assert {"httponly", "secure", "samesite=lax", "path=/"} <= attributes
        assert not any(attribute.startswith("domain") for attribute in attributes)
    assert session_cookie.startswith("__Host-bastion-login-")
    assert "max-age=300" in session_cookie.lower()  # the pending authorization's remaining life
    assert deleted.split("=")[0] == session_cookie.split("=")[0]
    assert "max-age=0" in deleted.lower()


async def test_insecure_cookies_have_no_prefix_and_no_secure_flag() -> None:
    from starlette.applications import Starlette

    from mcp_bastion.asgi.pages import page_routes

    harness = Harness()
    routes = page_routes(harness.service, harness.users, issuer=ISSUER, secure_cookies=False, clock=harness.clock)
    harness.app = Starlette(routes=routes)
    async with harness.browser() as browser:
        login_page = await harness.open_login(browser)
        login = await harness.submit_login(browser, login_page)
    cookie = login.headers["set-cookie"]
    assert cookie.startswith("bastion-login-")
    assert "secure" not in cookie.lower()


async def test_tampered_form_cannot_add_a_scope_the_user_may_not_grant(harness: Harness) -> None:
    async with harness.browser() as browser:
        page = await harness.consent_page(browser)
        form = consent_form(page, "approve", ["files:read", "admin", "not-requested"])
        approve = await browser.post("/authorize/consent", data=form)
    assert approve.status_code == 303
    assert harness.service.approvals[0].scopes == frozenset({"files:read"})


async def test_admin_gets_a_checkbox_for_the_admin_scope(harness: Harness) -> None:
    async with harness.browser() as browser:
        page = await harness.consent_page(browser, username="root")
        assert checkboxes(page.text) == ["files:read", "files:write", "admin"]
        await browser.post("/authorize/consent", data=consent_form(page, "approve", ["admin"]))
    assert harness.service.approvals[0].scopes == frozenset({"admin"})


async def test_remembered_consent_approves_without_showing_the_page(harness: Harness) -> None:
    harness.service.remember(harness.alice, CLIENT_ID, frozenset({"files:read", "files:write"}))
    async with harness.browser() as browser:
        login_page = await harness.open_login(browser, scope="files:read")
        login = await harness.submit_login(browser, login_page)
    assert login.status_code == 303
    assert query_of(login.headers["location"]) == {"code": "code-1", "state": STATE, "iss": ISSUER}
    assert "set-cookie" not in login.headers  # no session: there is nothing left to consent to
    assert harness.service.approvals[0].scopes == frozenset({"files:read"})


@pytest.mark.parametrize(
    ("remembered", "requested"),
    [
        pytest.param({"files:read"}, "files:read files:write", id="more-scopes-than-remembered"),
        pytest.param({"files:read", "admin"}, "files:read admin", id="remembered-but-no-longer-allowed"),
    ],
)
async def test_remembered_consent_that_does_not_cover_the_request_asks_again(
    harness: Harness, remembered: set[str], requested: str
) -> None:
    harness.service.remember(harness.alice, CLIENT_ID, frozenset(remembered))
    async with harness.browser() as browser:
        login = await harness.submit_login(browser, await harness.open_login(browser, scope=requested))
    assert login.status_code == 303
    assert login.headers["location"].startswith("/authorize/consent?")
    assert harness.service.approvals == []


async def test_deny_redirects_with_access_denied_and_state(harness: Harness) -> None:
    async with harness.browser() as browser:
        page = await harness.consent_page(browser)
        deny = await browser.post("/authorize/consent", data=consent_form(page, "deny", ["files:read"]))
    assert deny.status_code == 303
    assert deny.headers["location"].startswith(REDIRECT_URI + "?")
    assert query_of(deny.headers["location"]) == {"error": "access_denied", "state": STATE, "iss": ISSUER}
    assert harness.service.approvals == []
    assert len(harness.service.denials) == 1


async def test_a_login_session_serves_one_consent_only(harness: Harness) -> None:
    async with harness.browser() as browser:
        page = await harness.consent_page(browser)
        form = consent_form(page, "approve", ["files:read"])
        first = await browser.post("/authorize/consent", data=form)
        again = await browser.post("/authorize/consent", data=form)
    assert first.status_code == 303
    assert again.status_code == 403
    assert len(harness.service.approvals) == 1


async def test_two_authorizations_in_two_tabs_do_not_clobber_each_other(harness: Harness) -> None:
    async with harness.browser() as browser:
        first = await harness.consent_page(browser)
        second = await harness.consent_page(browser)
        ok_first = await browser.post("/authorize/consent", data=consent_form(first, "approve", ["files:read"]))
        ok_second = await browser.post("/authorize/consent", data=consent_form(second, "deny", []))
    assert (ok_first.status_code, ok_second.status_code) == (303, 303)
    assert "code=" in ok_first.headers["location"]
    assert "error=access_denied" in ok_second.headers["location"]


async def test_a_successful_login_is_reported_to_the_limiter(harness: Harness) -> None:
    async with harness.browser() as browser:
        await harness.submit_login(browser, await harness.open_login(browser))
    assert harness.limiter.calls == [("check", "alice", ADDRESS), ("succeeded", "alice", ADDRESS)]
