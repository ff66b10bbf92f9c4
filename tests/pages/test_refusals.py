"""What the pages refuse: wrong credentials, rate limits, CSRF, replayed consent, bad /authorize requests."""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from mcp_bastion.oauth.service import User
from tests.pages.fakes import ISSUER, hidden, reason
from tests.pages.harness import ADDRESS, PASSWORD, REDIRECT_URI, STATE, Harness, authorize_query, consent_form

pytestmark = pytest.mark.anyio

GENERIC = "Wrong username or password."


# -- login ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("username", "password"),
    [
        pytest.param("alice", "wrong", id="wrong-password"),
        pytest.param("nobody", PASSWORD, id="unknown-user"),
        pytest.param("", "", id="empty"),
    ],
)
async def test_wrong_credentials_show_the_login_page_again_with_a_generic_message(
    harness: Harness, username: str, password: str
) -> None:
    async with harness.browser() as browser:
        login_page = await harness.open_login(browser)
        response = await harness.submit_login(browser, login_page, username, password)
    assert response.status_code == 401
    assert GENERIC in response.text
    assert "set-cookie" not in response.headers
    assert set(hidden(response.text)) == {"pending", "csrf"}  # the user can simply try again
    assert harness.limiter.calls == [("check", username, ADDRESS), ("failed", username, ADDRESS)]
    assert harness.service.approvals == []


async def test_a_disabled_user_is_refused_even_if_the_directory_lets_it_through(harness: Harness) -> None:
    harness.users.users["ghost"] = (User(id="u-ghost", username="ghost", disabled=True), PASSWORD)

    async def lenient(username: str, password: str) -> User:
        return harness.users.users[username][0]

    harness.users.authenticate = lenient  # type: ignore[method-assign]
    async with harness.browser() as browser:
        response = await harness.submit_login(browser, await harness.open_login(browser), "ghost")
    assert response.status_code == 401
    assert harness.limiter.calls[-1] == ("failed", "ghost", ADDRESS)


async def test_retry_after_wrong_password_succeeds(harness: Harness) -> None:
    async with harness.browser() as browser:
        failed = await harness.submit_login(browser, await harness.open_login(browser), "alice", "nope")
        retried = await harness.submit_login(browser, failed, "alice", PASSWORD)
    assert retried.status_code == 303


async def test_rate_limited_login_is_429_with_retry_after_and_checks_no_password(harness: Harness) -> None:
    harness.limiter.wait = 29.2
    async with harness.browser() as browser:
        response = await harness.submit_login(browser, await harness.open_login(browser))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "30"
    assert reason(response.text) == "login_rate_limited"
    assert harness.users.attempts == []
    assert harness.limiter.calls == [("check", "alice", ADDRESS)]


# -- CSRF -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param({"csrf": None}, id="token-missing"),
        pytest.param({"csrf": "A" * 43}, id="token-wrong"),
        pytest.param({"csrf": ""}, id="token-empty"),
        pytest.param({"pending": "another-pending"}, id="token-for-another-pending"),
    ],
)
async def test_login_without_a_valid_csrf_token_is_403(harness: Harness, tamper: dict[str, str | None]) -> None:
    async with harness.browser() as browser:
        login_page = await harness.open_login(browser)
        fields: dict[str, str | None] = {**hidden(login_page.text), "username": "alice", "password": PASSWORD}
        fields.update(tamper)
        response = await browser.post("/authorize/login", data={k: v for k, v in fields.items() if v is not None})
    assert response.status_code == 403
    assert reason(response.text) == "csrf_invalid"
    assert harness.users.attempts == []


async def test_login_token_from_another_browser_is_403(harness: Harness) -> None:
    async with harness.browser() as victim, harness.browser() as attacker:
        # The attacker fetched a genuine form in their own browser and makes the victim post it.
        forged = await harness.open_login(attacker)
        await harness.open_login(victim)
        fields = {**hidden(forged.text), "username": "alice", "password": PASSWORD}
        response = await victim.post("/authorize/login", data=fields)
    assert response.status_code == 403
    assert reason(response.text) == "csrf_invalid"


async def test_login_without_the_browser_cookie_is_403(harness: Harness) -> None:
    async with harness.browser() as browser:
        login_page = await harness.open_login(browser)
        browser.cookies.clear()
        response = await harness.submit_login(browser, login_page)
    assert response.status_code == 403
    assert reason(response.text) == "csrf_invalid"


async def test_consent_with_a_wrong_csrf_token_is_403(harness: Harness) -> None:
    async with harness.browser() as browser:
        page = await harness.consent_page(browser)
        form = {**consent_form(page, "approve", ["files:read"]), "csrf": "A" * 43}
        response = await browser.post("/authorize/consent", data=form)
        del form["csrf"]
        missing = await browser.post("/authorize/consent", data=form)
    assert (response.status_code, missing.status_code) == (403, 403)
    assert reason(response.text) == reason(missing.text) == "csrf_invalid"
    assert harness.service.approvals == []


# -- replayed consent -------------------------------------------------------------------------------


async def test_consent_form_replayed_from_another_browser_is_403(harness: Harness) -> None:
    async with harness.browser() as alice, harness.browser() as mallory:
        page = await harness.consent_page(alice)
        await harness.consent_page(mallory, username="root")  # mallory has a session of her own
        response = await mallory.post("/authorize/consent", data=consent_form(page, "approve", ["files:read"]))
    assert response.status_code == 403
    assert reason(response.text) == "session_invalid"
    assert harness.service.approvals == []


async def test_a_session_cookie_moved_to_another_pending_is_403(harness: Harness) -> None:
    async with harness.browser() as browser:
        first = await harness.consent_page(browser)
        second = await harness.consent_page(browser)
        first_id, second_id = hidden(first.text)["pending"], hidden(second.text)["pending"]
        cookies = {cookie.name: cookie.value or "" for cookie in browser.cookies.jar}
        logins = sorted(name for name in cookies if name.startswith("__Host-bastion-login-"))
        assert len(logins) == 2
        # Put each session cookie's value under the other's name.
        browser.cookies.clear()
        browser.cookies.set(logins[0], cookies[logins[1]], domain="bastion.test")
        browser.cookies.set(logins[1], cookies[logins[0]], domain="bastion.test")
        responses = [
            await browser.get(f"/authorize/consent?pending={first_id}"),
            await browser.get(f"/authorize/consent?pending={second_id}"),
        ]
    assert [r.status_code for r in responses] == [403, 403]


async def test_a_forged_or_expired_session_cookie_is_403(harness: Harness) -> None:
    async with harness.browser() as browser:
        page = await harness.consent_page(browser)
        pending_id = hidden(page.text)["pending"]
        [name] = [cookie.name for cookie in browser.cookies.jar if cookie.name.startswith("__Host-bastion-login-")]
        value = browser.cookies[name]
        body, mac = value.split(".")
        browser.cookies.set(name, f"{body}.{mac[:-2]}AA", domain="bastion.test")
        forged = await browser.get(f"/authorize/consent?pending={pending_id}")
        browser.cookies.set(name, value, domain="bastion.test")
        harness.clock.now += 301  # past the pending authorization's expiry, and so the session's
        expired = await browser.get(f"/authorize/consent?pending={pending_id}")
    assert (forged.status_code, expired.status_code) == (403, 403)
    assert reason(forged.text) == reason(expired.text) == "session_invalid"


async def test_consent_of_a_user_disabled_since_login_is_403(harness: Harness) -> None:
    async with harness.browser() as browser:
        page = await harness.consent_page(browser)
        harness.users.users["alice"] = (User(id="u-alice", username="alice", disabled=True), PASSWORD)
        response = await browser.post("/authorize/consent", data=consent_form(page, "approve", ["files:read"]))
    assert response.status_code == 403
    assert harness.service.approvals == []


async def test_consent_with_an_unknown_action_is_400(harness: Harness) -> None:
    async with harness.browser() as browser:
        page = await harness.consent_page(browser)
        response = await browser.post("/authorize/consent", data=consent_form(page, "maybe", []))
    assert response.status_code == 400
    assert reason(response.text) == "form_malformed"


# -- /authorize ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"client_id": "nobody"}, id="unknown-client"),
        pytest.param({"redirect_uri": "https://evil.example/steal"}, id="unregistered-redirect"),
        pytest.param({"client_id": None}, id="no-client"),
    ],
)
async def test_unverifiable_authorize_request_is_an_error_page_never_a_redirect(
    harness: Harness, overrides: dict[str, str | None]
) -> None:
    async with harness.browser() as browser:
        response = await browser.get(f"/authorize?{urlencode(authorize_query(**overrides))}")
    assert response.status_code == 400
    assert "location" not in response.headers
    assert "evil.example" not in response.text
    assert reason(response.text) == "invalid_request"


async def test_refusal_with_a_verified_redirect_goes_back_to_the_client(harness: Harness) -> None:
    async with harness.browser() as browser:
        response = await browser.get(f"/authorize?{urlencode(authorize_query(code_challenge_method='plain'))}")
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith(REDIRECT_URI + "?")
    assert parse_qs(urlsplit(location).query) == {
        "error": ["invalid_request"],
        "error_description": ["PKCE with S256 is required."],
        "state": [STATE],
        "iss": [ISSUER],
    }


async def test_repeated_authorize_parameter_is_refused_without_redirect(harness: Harness) -> None:
    query = urlencode(authorize_query()) + "&redirect_uri=https%3A%2F%2Fevil.example%2F"
    async with harness.browser() as browser:
        response = await browser.get(f"/authorize?{query}")
    assert response.status_code == 400
    assert "location" not in response.headers


async def test_login_for_an_expired_authorization_is_an_error_page(harness: Harness) -> None:
    async with harness.browser() as browser:
        login_page = await harness.open_login(browser)
        harness.clock.now += 301
        response = await harness.submit_login(browser, login_page)
    assert response.status_code == 400
    assert reason(response.text) == "invalid_request"


# -- forms and methods ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        pytest.param("GET", "/authorize/login", id="get-login"),
        pytest.param("POST", "/authorize", id="post-authorize"),
        pytest.param("DELETE", "/authorize/consent", id="delete-consent"),
    ],
)
async def test_wrong_method_is_405_page(harness: Harness, method: str, path: str) -> None:
    async with harness.browser() as browser:
        response = await browser.request(method, path)
    assert response.status_code == 405
    assert reason(response.text) == "method_not_allowed"
    assert "allow" in response.headers


async def test_oversized_form_is_413(harness: Harness) -> None:
    async with harness.browser() as browser:
        login_page = await harness.open_login(browser)
        response = await harness.submit_login(browser, login_page, "alice", "x" * 20_000)
    assert response.status_code == 413
    assert harness.users.attempts == []


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        pytest.param(b"--b\r\n", "multipart/form-data; boundary=b", id="multipart"),
        pytest.param(b"{}", "application/json", id="json"),
        pytest.param(b"username=%ff", "application/x-www-form-urlencoded", id="bad-utf8"),
        pytest.param(b"&".join(b"a=1" for _ in range(100)), "application/x-www-form-urlencoded", id="too-many"),
        pytest.param(b"pending=a&pending=b", "application/x-www-form-urlencoded", id="repeated-field"),
    ],
)
async def test_malformed_form_is_400(harness: Harness, content: bytes, content_type: str) -> None:
    async with harness.browser() as browser:
        await harness.open_login(browser)
        response = await browser.post("/authorize/login", content=content, headers={"content-type": content_type})
    assert response.status_code == 400
    assert reason(response.text) == "form_malformed"
