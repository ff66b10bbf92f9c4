"""One negative test per RFC 9700 §4 attack that applies to this authorization server, at the core level.

§4.1 redirect URI manipulation · §4.2 credential leakage via referer/history (codes single-use, short) ·
§4.4 mix-up (RFC 9207 ``iss``) · §4.5 authorization code injection · §4.7 CSRF (``state``) · §4.8 PKCE
downgrade · §4.10 misuse of stolen access tokens (audience restriction) · §4.11 open redirection ·
§4.13 refresh token protection (rotation, reuse detection, client binding, no scope escalation) ·
RFC 6749 §4.1.2 / §10.5 code replay · RFC 7523 client assertion replay and client impersonation.
"""

from __future__ import annotations

from collections.abc import Awaitable

import anyio
import pytest
from joserfc.jwk import ECKey

from mcp_bastion.errors import Unauthenticated
from mcp_bastion.oauth.clientauth import ASSERTION_TYPE
from mcp_bastion.oauth.grants import Lifetimes
from mcp_bastion.oauth.refusal import Refusal
from tests.oauth.asworld import (
    ALICE,
    BOB,
    CHALLENGE,
    ISSUER,
    NOW,
    OTHER_RESOURCE,
    REDIRECT,
    VERIFIER,
    World,
    basic,
    make_world,
    redirect_params,
    string,
)
from tests.oauth.support import compact, public, signer


async def _expect_refusal(attempt: Awaitable[object], error: str, reason: str) -> Refusal:
    with pytest.raises(Refusal) as caught:
        await attempt
    assert (caught.value.error, caught.value.reason) == (error, reason)
    return caught.value


async def _revoked(world: World, access_token: str) -> bool:
    """Whether the resource side now refuses the token as revoked (it must still be valid otherwise)."""
    try:
        await world.verify(access_token)
    except Unauthenticated as exc:
        return exc.reason == "token_revoked"
    return False


# -- §4.1 redirect URI manipulation, §4.11 open redirection ---------------------------------------------


@pytest.mark.parametrize(
    ("redirect_uri", "reason"),
    [
        pytest.param(REDIRECT + "/evil", "redirect_uri_mismatch", id="suffix"),
        pytest.param(REDIRECT[:-3], "redirect_uri_mismatch", id="prefix"),
        pytest.param(REDIRECT + "?next=https://evil.example", "redirect_uri_mismatch", id="added-query"),
        pytest.param("https://app.example/callback/../evil", "redirect_uri_path_trick", id="path-traversal"),
        pytest.param("https://app.example/callback%2f..%2fevil", "redirect_uri_path_trick", id="encoded-traversal"),
        pytest.param("https://app.example@evil.example/callback", "redirect_uri_userinfo", id="userinfo"),
        pytest.param(REDIRECT + "#frag", "redirect_uri_malformed", id="fragment"),
        pytest.param("https://app.example:8443/callback", "redirect_uri_mismatch", id="other-port-not-loopback"),
        pytest.param("http://app.example/callback", "redirect_uri_insecure", id="other-scheme"),
        pytest.param("https://app.example.evil.example/callback", "redirect_uri_mismatch", id="host-suffix"),
        pytest.param("https://evil.example/callback", "redirect_uri_mismatch", id="other-host"),
    ],
)
@pytest.mark.anyio
async def test_redirect_uri_manipulation_never_redirects(redirect_uri: str, reason: str) -> None:
    world = make_world()
    client_id, _ = await world.register()
    attempt = world.server.begin(world.query(client_id, redirect_uri=redirect_uri))
    refusal = await _expect_refusal(attempt, "invalid_request", reason)
    # §4.11: an error about an unverified redirect URI is shown to the user, never sent to that URI.
    assert refusal.redirect_uri is None
    assert world.store.pending == {}


@pytest.mark.anyio
async def test_open_redirect_unknown_client_with_valid_looking_uri() -> None:
    world = make_world()
    refusal = await _expect_refusal(
        world.server.begin(world.query("unknown-client", redirect_uri="https://evil.example/cb", response_type="x")),
        "invalid_request",
        "client_unknown",
    )
    assert refusal.redirect_uri is None


# -- §4.5 authorization code injection -----------------------------------------------------------------


@pytest.mark.anyio
async def test_code_for_client_a_redeemed_by_client_b() -> None:
    world = make_world()
    client_a, _ = await world.register()
    client_b, _ = await world.register()
    code = await world.code(client_a)
    await _expect_refusal(world.redeem(client_b, code), "invalid_grant", "code_client_mismatch")
    # The injected code is burnt: A cannot be tricked into using it later either.
    await _expect_refusal(world.redeem(client_a, code), "invalid_grant", "code_replayed")


@pytest.mark.anyio
async def test_code_for_confidential_client_redeemed_by_public_client_with_pkce() -> None:
    world = make_world()
    confidential, _ = await world.register(token_endpoint_auth_method="client_secret_basic")
    attacker, _ = await world.register()
    code = await world.code(confidential)
    await _expect_refusal(world.redeem(attacker, code), "invalid_grant", "code_client_mismatch")


@pytest.mark.anyio
async def test_code_bound_to_redirect_uri() -> None:
    world = make_world()
    client_id, _ = await world.register(redirect_uris=[REDIRECT, "https://app.example/other"])
    code = await world.code(client_id)
    await _expect_refusal(
        world.redeem(client_id, code, redirect_uri="https://app.example/other"),
        "invalid_grant",
        "code_redirect_uri_mismatch",
    )


@pytest.mark.anyio
async def test_code_bound_to_resource() -> None:
    world = make_world()
    client_id, _ = await world.register()
    code = await world.code(client_id)
    await _expect_refusal(world.redeem(client_id, code, resource=OTHER_RESOURCE), "invalid_grant", "resource_mismatch")


@pytest.mark.anyio
async def test_code_bound_to_pkce_challenge() -> None:
    """An attacker injecting a code stolen from another session has the wrong verifier (§4.5.3.1)."""
    world = make_world()
    client_id, _ = await world.register()
    other_verifier = "A" * 43
    code = await world.code(client_id)
    await _expect_refusal(
        world.redeem(client_id, code, code_verifier=other_verifier), "invalid_grant", "pkce_verifier_mismatch"
    )


# -- RFC 6749 §4.1.2 code replay -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_code_replay_fails_and_revokes_what_the_code_issued() -> None:
    world = make_world()
    client_id, _ = await world.register()
    code = await world.code(client_id)
    first = await world.redeem(client_id, code)
    access_token = string(first["access_token"])
    assert not await _revoked(world, access_token)

    world.clock.now += 5
    await _expect_refusal(world.redeem(client_id, code), "invalid_grant", "code_replayed")

    assert await _revoked(world, access_token)
    await _expect_refusal(world.refresh(client_id, string(first["refresh_token"])), "invalid_grant", "family_revoked")
    family = next(iter(world.store.families.values()))
    assert family.reason == "code_replay"


@pytest.mark.anyio
async def test_concurrent_code_redemptions_one_wins_and_the_family_dies() -> None:
    world = make_world()
    client_id, _ = await world.register()
    code = await world.code(client_id)
    outcomes: list[object] = []

    async def redeem() -> None:
        try:
            outcomes.append(await world.redeem(client_id, code))
        except Refusal as exc:
            outcomes.append(exc.reason)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(redeem)
            group.start_soon(redeem)
    assert sorted(type(outcome).__name__ for outcome in outcomes) == ["dict", "str"]
    assert "code_replayed" in outcomes
    winner = next(outcome for outcome in outcomes if isinstance(outcome, dict))
    assert await _revoked(world, string(winner["access_token"]))


# -- §4.8 PKCE downgrade -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        pytest.param(
            {"code_challenge_method": "plain", "code_challenge": VERIFIER}, "pkce_method_unsupported", id="plain"
        ),
        pytest.param({"code_challenge_method": None}, "pkce_method_unsupported", id="method-missing"),
        pytest.param(
            {"code_challenge": None, "code_challenge_method": None}, "pkce_challenge_missing", id="challenge-missing"
        ),
    ],
)
@pytest.mark.anyio
async def test_pkce_downgrade_at_authorize(overrides: dict[str, str | None], reason: str) -> None:
    world = make_world()
    client_id, _ = await world.register()
    await _expect_refusal(world.server.begin(world.query(client_id, **overrides)), "invalid_request", reason)


@pytest.mark.parametrize(
    ("verifier", "reason"),
    [
        pytest.param(None, "pkce_verifier_missing", id="verifier-missing"),
        pytest.param("B" * 43, "pkce_verifier_mismatch", id="wrong-verifier"),
        pytest.param(CHALLENGE, "pkce_verifier_mismatch", id="challenge-replayed-as-verifier"),
    ],
)
@pytest.mark.anyio
async def test_pkce_at_token_endpoint(verifier: str | None, reason: str) -> None:
    world = make_world()
    client_id, _ = await world.register()
    code = await world.code(client_id)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": client_id}
    if verifier is not None:
        form["code_verifier"] = verifier
    await _expect_refusal(world.token(form), "invalid_grant", reason)


# -- §4.4 mix-up, §4.7 CSRF ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_mix_up_iss_in_every_authorization_response() -> None:
    world = make_world()
    client_id, _ = await world.register()
    approved = await world.server.approve((await world.server.begin(world.query(client_id))).id, ALICE, frozenset())
    denied = await world.server.deny((await world.server.begin(world.query(client_id))).id)
    assert redirect_params(approved)["iss"] == ISSUER
    assert redirect_params(denied)["iss"] == ISSUER
    assert world.server.metadata()["authorization_response_iss_parameter_supported"] is True
    # Error redirects carry the verified redirect URI and state; the pages add the same issuer.
    refusal = await _expect_refusal(
        world.server.begin(world.query(client_id, code_challenge=None)), "invalid_request", "pkce_challenge_missing"
    )
    assert (refusal.redirect_uri, refusal.state) == (REDIRECT, "state-123")


@pytest.mark.parametrize(
    "state",
    [
        pytest.param("opaque-123", id="plain"),
        pytest.param("a+b c&d=e%20f/?#", id="reserved-characters"),
        pytest.param("ünïcødé", id="unicode"),
    ],
)
@pytest.mark.anyio
async def test_csrf_state_echoed_unchanged(state: str) -> None:
    world = make_world()
    client_id, _ = await world.register()
    pending = await world.server.begin(world.query(client_id, state=state))
    assert redirect_params(await world.server.approve(pending.id, ALICE, frozenset(pending.scopes)))["state"] == state
    pending = await world.server.begin(world.query(client_id, state=state))
    assert redirect_params(await world.server.deny(pending.id))["state"] == state
    refusal = await _expect_refusal(
        world.server.begin(world.query(client_id, state=state, response_type="token")),
        "unsupported_response_type",
        "response_type_unsupported",
    )
    assert refusal.state == state


# -- §4.13 refresh token protection --------------------------------------------------------------------


@pytest.mark.anyio
async def test_refresh_reuse_after_rotation_revokes_the_family() -> None:
    world = make_world()
    client_id, _ = await world.register()
    first = await world.redeem(client_id, await world.code(client_id))
    world.clock.now += 60
    second = await world.refresh(client_id, string(first["refresh_token"]))
    newest_access = string(second["access_token"])
    assert not await _revoked(world, newest_access)

    world.clock.now += 6  # past the 5 s grace window: the old token is replayed (stolen)
    await _expect_refusal(world.refresh(client_id, string(first["refresh_token"])), "invalid_grant", "refresh_reused")

    # The whole family dies: the legitimate client's newest refresh and access tokens too.
    await _expect_refusal(world.refresh(client_id, string(second["refresh_token"])), "invalid_grant", "family_revoked")
    assert await _revoked(world, newest_access)
    assert await _revoked(world, string(first["access_token"]))
    assert next(iter(world.store.families.values())).reason == "refresh_reuse"


@pytest.mark.parametrize("delay", [pytest.param(0.0, id="same-instant"), pytest.param(5.0, id="end-of-grace")])
@pytest.mark.anyio
async def test_duplicate_refresh_within_grace_gets_the_same_pair(delay: float) -> None:
    world = make_world()
    client_id, _ = await world.register()
    first = await world.redeem(client_id, await world.code(client_id))
    world.clock.now += 60
    one = await world.refresh(client_id, string(first["refresh_token"]))
    world.clock.now += delay
    two = await world.refresh(client_id, string(first["refresh_token"]))
    assert one == two
    assert not await _revoked(world, string(one["access_token"]))
    # And the session goes on with that pair.
    world.clock.now += 60
    assert "access_token" in await world.refresh(client_id, string(one["refresh_token"]))


@pytest.mark.anyio
async def test_concurrent_duplicate_refresh_gets_the_same_pair() -> None:
    world = make_world()
    client_id, _ = await world.register()
    first = await world.redeem(client_id, await world.code(client_id))
    results: list[dict[str, object]] = []

    async def refresh() -> None:
        results.append(dict(await world.refresh(client_id, string(first["refresh_token"]))))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            for _ in range(3):
                group.start_soon(refresh)
    assert len(results) == 3
    assert results[0] == results[1] == results[2]


@pytest.mark.anyio
async def test_grace_window_zero_means_any_reuse_revokes() -> None:
    world = make_world(lifetimes=Lifetimes(refresh_grace=0))
    client_id, _ = await world.register()
    first = await world.redeem(client_id, await world.code(client_id))
    await world.refresh(client_id, string(first["refresh_token"]))
    world.clock.now += 0.001
    await _expect_refusal(world.refresh(client_id, string(first["refresh_token"])), "invalid_grant", "refresh_reused")


@pytest.mark.anyio
async def test_refresh_token_of_another_client_is_refused_and_burnt() -> None:
    """§4.13.1 / token leakage: a refresh token is bound to its client."""
    world = make_world()
    victim, _ = await world.register()
    attacker, _ = await world.register()
    tokens = await world.redeem(victim, await world.code(victim))
    await _expect_refusal(
        world.refresh(attacker, string(tokens["refresh_token"])), "invalid_grant", "refresh_client_mismatch"
    )
    # It has leaked: the grant is revoked for everyone.
    await _expect_refusal(world.refresh(victim, string(tokens["refresh_token"])), "invalid_grant", "family_revoked")


@pytest.mark.anyio
async def test_refresh_cannot_switch_resource() -> None:
    world = make_world()
    client_id, _ = await world.register()
    tokens = await world.redeem(client_id, await world.code(client_id))
    await _expect_refusal(
        world.refresh(client_id, string(tokens["refresh_token"]), resource=OTHER_RESOURCE),
        "invalid_grant",
        "resource_mismatch",
    )


@pytest.mark.parametrize(
    "scope",
    [
        pytest.param("customers:write", id="scope-not-granted"),
        pytest.param("customers:read customers:write", id="wider-than-granted"),
        pytest.param("billing:read", id="scope-of-another-resource"),
    ],
)
@pytest.mark.anyio
async def test_scope_escalation_at_refresh(scope: str) -> None:
    world = make_world()
    client_id, _ = await world.register()
    tokens = await world.redeem(client_id, await world.code(client_id, scope="customers:read"))
    await _expect_refusal(
        world.refresh(client_id, string(tokens["refresh_token"]), scope=scope), "invalid_scope", "scope_escalation"
    )


# -- §4.10 stolen access tokens: audience restriction --------------------------------------------------


@pytest.mark.anyio
async def test_access_token_only_valid_for_its_resource() -> None:
    world = make_world()
    client_id, _ = await world.register()
    tokens = await world.redeem(client_id, await world.code(client_id))
    with pytest.raises(Unauthenticated) as caught:
        await world.verify(string(tokens["access_token"]), audience=OTHER_RESOURCE)
    assert caught.value.reason == "token_audience_mismatch"


# -- client impersonation ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_wrong_client_secret() -> None:
    world = make_world()
    client_id, secret = await world.register(token_endpoint_auth_method="client_secret_basic")
    assert secret is not None
    code = await world.code(client_id)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": VERIFIER}
    refusal = await _expect_refusal(
        world.server.token(form, basic(client_id, secret + "x")), "invalid_client", "client_secret_invalid"
    )
    assert refusal.status == 401
    # Authentication failed before the code was touched: the real client can still redeem it.
    assert "access_token" in await world.server.token(form, basic(client_id, secret))


@pytest.mark.anyio
async def test_public_client_using_a_confidential_clients_id() -> None:
    world = make_world()
    client_id, _ = await world.register(token_endpoint_auth_method="client_secret_basic")
    code = await world.code(client_id)
    await _expect_refusal(world.redeem(client_id, code), "invalid_client", "client_auth_method_mismatch")


TOKEN_ENDPOINT = ISSUER + "/oauth/token"
CLIENT_KEY = ECKey.generate_key("P-256", parameters={"kid": "c1"}, private=True)


async def _jwt_client(world: World) -> str:
    client_id, _ = await world.register(
        token_endpoint_auth_method="private_key_jwt", jwks={"keys": [public(CLIENT_KEY)]}
    )
    return client_id


def _assertion(client_id: str, **changes: object) -> str:
    claims: dict[str, object] = {
        "iss": client_id,
        "sub": client_id,
        "aud": TOKEN_ENDPOINT,
        "exp": NOW + 60,
        "iat": NOW,
        "jti": "once",
    }
    claims.update(changes)
    return compact({"alg": "ES256", "kid": "c1"}, claims, signer("ES256", CLIENT_KEY))


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        pytest.param({"aud": "https://other-as.example/oauth/token"}, "assertion_audience_invalid", id="wrong-aud"),
        pytest.param({"exp": NOW - 60}, "assertion_expired", id="expired"),
    ],
)
@pytest.mark.anyio
async def test_private_key_jwt_refused(changes: dict[str, object], reason: str) -> None:
    world = make_world()
    client_id = await _jwt_client(world)
    code = await world.code(client_id)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": VERIFIER,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": _assertion(client_id, **changes),
    }
    await _expect_refusal(world.token(form), "invalid_client", reason)


@pytest.mark.anyio
async def test_private_key_jwt_replayed_jti() -> None:
    world = make_world()
    client_id = await _jwt_client(world)
    assertion = _assertion(client_id)
    base = {
        "grant_type": "authorization_code",
        "redirect_uri": REDIRECT,
        "code_verifier": VERIFIER,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
    }
    assert "access_token" in await world.token({**base, "code": await world.code(client_id)})
    await _expect_refusal(
        world.token({**base, "code": await world.code(client_id)}), "invalid_client", "assertion_replayed"
    )


# -- consent is per user -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_code_carries_the_consenting_user_only() -> None:
    world = make_world()
    client_id, _ = await world.register()
    tokens = await world.redeem(client_id, await world.code(client_id, BOB))
    assert (await world.verify(string(tokens["access_token"]))).subject == BOB.id
    assert await world.server.consent(ALICE, client_id) is None
