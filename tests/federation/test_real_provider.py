"""Federated login against a real third-party OpenID Provider (npm oidc-provider, certified) on loopback.

Each test starts the provider as a child process, starts a login with ``FederatedLogin.start``, signs in at
the provider's own login and consent pages as a browser would (httpx), takes the redirect to our callback
URL, and hands its query to ``FederatedLogin.finish``. The provider issues pairwise subjects, signs ID
tokens with keys generated at its start, requires PKCE, and sends RFC 9207 ``iss``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import pytest

from mcp_bastion.oauth.federation import FederatedLogin, OIDCProvider
from mcp_bastion.oauth.jwks import RemoteKeySet
from mcp_bastion.oauth.refusal import Refusal

from .realidp import CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, browse_to_callback, running_provider

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

GROUP_ROLES: Mapping[str, frozenset[str]] = {
    "analysts": frozenset({"analyst"}),
    "admins": frozenset({"admin", "analyst"}),
}
SCOPES = ("openid", "profile", "email", "groups")


def _settings(issuer: str, **changes: Any) -> OIDCProvider:
    settings: dict[str, Any] = {
        "issuer": issuer,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "redirect_uri": REDIRECT_URI,
        "scopes": SCOPES,
        "group_roles": GROUP_ROLES,
        "allow_insecure_http": True,  # the provider is on http://127.0.0.1:PORT
    }
    settings.update(changes)
    return OIDCProvider(**settings)


@asynccontextmanager
async def federated(issuer: str, **changes: Any) -> AsyncIterator[FederatedLogin]:
    login = FederatedLogin(_settings(issuer, **changes))
    try:
        await login.discover()
        yield login
    finally:
        await login.aclose()


@pytest.mark.parametrize(
    ("alg", "claims_in_id_token", "confidential"),
    [
        pytest.param("ES256", False, True, id="ES256-userinfo-client_secret_basic"),
        pytest.param("RS256", True, False, id="RS256-id_token-claims-public-client"),
        pytest.param("EdDSA", False, False, id="EdDSA-userinfo-public-client"),
    ],
)
async def test_alice_logs_in(alg: str, claims_in_id_token: bool, confidential: bool) -> None:
    secret = CLIENT_SECRET if confidential else None
    async with (
        running_provider(client_secret=secret, alg=alg, claims_in_id_token=claims_in_id_token) as issuer,
        # With claims in the ID token, UserInfo is not read: the ID token alone must carry them.
        federated(
            issuer, client_secret=secret, algorithms=frozenset({alg}), use_userinfo=not claims_in_id_token
        ) as login,
    ):
        url, state = login.start("pending-42")
        params = await browse_to_callback(url, login="alice")
        assert params["iss"] == issuer
        assert params["state"] == state.state
        user, pending_id = await login.finish(params, state)
    assert pending_id == "pending-42"
    assert user.username == "alice"
    assert user.roles == frozenset({"analyst"})
    issuer_part, _, subject = user.id.rpartition("#")
    assert issuer_part == issuer
    assert len(subject) == 64  # pairwise: an opaque hash, not the login name
    assert subject != "alice"


async def test_bob_is_admin_and_email_domains_are_enforced() -> None:
    async with (
        running_provider() as issuer,
        federated(issuer, allowed_email_domains=frozenset({"example.org"})) as login,
    ):
        url, state = login.start("p-bob")
        bob, _ = await login.finish(await browse_to_callback(url, login="bob"), state)
        assert (bob.username, bob.roles) == ("bob", frozenset({"admin", "analyst"}))

        url, state = login.start("p-alice")
        with pytest.raises(Refusal) as caught:
            await login.finish(await browse_to_callback(url, login="alice"), state)  # alice@example.com
        assert (caught.value.reason, caught.value.error) == ("email_domain_forbidden", "access_denied")


async def test_user_cancels_at_the_idp() -> None:
    async with running_provider() as issuer, federated(issuer) as login:
        url, state = login.start("p")
        params = await browse_to_callback(url, login="alice", abort=True)
        assert params["error"] == "access_denied"
        with pytest.raises(Refusal) as caught:
            await login.finish(params, state)
    assert (caught.value.reason, caught.value.error) == ("idp_error", "access_denied")


async def test_callback_checks_against_the_real_provider() -> None:
    """One real login, replayed with one thing changed at a time; the honest finish comes last, so every
    refusal before it happened before the code was spent (or PKCE/nonce stopped it at or after the spend)."""
    async with running_provider() as issuer, federated(issuer) as login:
        url, state = login.start("p")
        params = await browse_to_callback(url, login="alice")
        cases: list[tuple[dict[str, str], Any, str]] = [
            ({**params, "state": "forged-" + state.state[7:]}, state, "state_mismatch"),
            ({**params, "iss": issuer + "/"}, state, "iss_mismatch"),
            ({k: v for k, v in params.items() if k != "iss"}, state, "iss_missing"),  # the provider advertises iss
        ]
        for changed, used_state, reason in cases:
            with pytest.raises(Refusal) as caught:
                await login.finish(changed, used_state)
            assert caught.value.reason == reason
        user, _ = await login.finish(params, state)
        assert user.username == "alice"
        # The code is single-use at the real provider: a replay is refused at its token endpoint.
        with pytest.raises(Refusal) as caught:
            await login.finish(params, state)
        assert caught.value.reason == "token_request_refused"


async def test_pkce_verifier_must_match() -> None:
    async with running_provider() as issuer, federated(issuer) as login:
        url, state = login.start("p")
        params = await browse_to_callback(url, login="alice")
        with pytest.raises(Refusal) as caught:
            await login.finish(params, replace(state, code_verifier="A" * 43))
    assert caught.value.reason == "token_request_refused"
    assert "invalid_grant" in caught.value.description


async def test_nonce_from_another_login_is_refused() -> None:
    async with running_provider() as issuer, federated(issuer) as login:
        url, state = login.start("p")
        _, other = login.start("p")
        params = await browse_to_callback(url, login="alice")
        with pytest.raises(Refusal) as caught:
            await login.finish(params, replace(state, nonce=other.nonce))
    assert caught.value.reason == "id_token_nonce_mismatch"


async def test_id_token_from_one_provider_is_not_trusted_with_anothers_keys() -> None:
    async with running_provider() as issuer, running_provider() as stranger:
        # Keys of the second provider stand in for "the IdP's key set" of the first: every ID token of the
        # first is then signed by a key we do not trust.
        keys = RemoteKeySet(f"{stranger}/jwks", None, allow_insecure_http=True)
        login = FederatedLogin(_settings(issuer), keys=lambda _uri: keys)
        try:
            await login.discover()
            url, state = login.start("p")
            params = await browse_to_callback(url, login="alice")
            with pytest.raises(Refusal) as caught:
                await login.finish(params, state)
        finally:
            await login.aclose()
    assert caught.value.reason == "id_token_key_unknown"


async def test_discovery_issuer_must_match_exactly() -> None:
    async with running_provider() as issuer:
        login = FederatedLogin(_settings(issuer + "/"))  # same discovery URL, different issuer string
        try:
            with pytest.raises(Refusal) as caught:
                await login.discover()
        finally:
            await login.aclose()
    assert caught.value.reason == "discovery_issuer_mismatch"


async def test_wrong_client_secret_is_refused_by_the_provider() -> None:
    async with running_provider() as issuer, federated(issuer, client_secret="not-the-secret") as login:
        url, state = login.start("p")
        with pytest.raises(Refusal) as caught:
            await login.finish(await browse_to_callback(url, login="alice"), state)
    assert caught.value.reason == "token_request_refused"
    assert "not-the-secret" not in str(caught.value)
