"""RFC 7009 revocation, RFC 7662 introspection, and the resource side's revocation check (fail closed)."""

from __future__ import annotations

import pytest

from mcp_bastion.errors import Unauthenticated, Unavailable
from mcp_bastion.oauth.access_token import AccessClaims
from mcp_bastion.oauth.refusal import Refusal
from tests.oauth.asworld import NOW, RESOURCE, World, basic, make_world, string


async def _confidential(world: World) -> tuple[str, str]:
    client_id, secret = await world.register(token_endpoint_auth_method="client_secret_basic")
    assert secret is not None
    return client_id, secret


async def _tokens(world: World, client_id: str, secret: str | None = None) -> tuple[str, str]:
    response = await world.redeem(client_id, await world.code(client_id), secret=secret)
    return string(response["access_token"]), string(response["refresh_token"])


async def _refusal_reason(world: World, access_token: str) -> str | None:
    try:
        await world.verify(access_token)
    except Unauthenticated as exc:
        return exc.reason
    return None


@pytest.mark.anyio
async def test_revoking_a_refresh_token_revokes_its_family() -> None:
    world = make_world()
    client_id, _ = await world.register()
    access, refresh = await _tokens(world, client_id)
    await world.server.revoke({"token": refresh, "client_id": client_id}, None)
    assert await _refusal_reason(world, access) == "token_revoked"
    with pytest.raises(Refusal) as caught:
        await world.refresh(client_id, refresh)
    assert caught.value.reason == "family_revoked"


@pytest.mark.anyio
async def test_revoking_an_access_token_revokes_its_jti_only() -> None:
    world = make_world()
    client_id, _ = await world.register()
    access, refresh = await _tokens(world, client_id)
    await world.server.revoke({"token": access, "token_type_hint": "access_token", "client_id": client_id}, None)
    assert await _refusal_reason(world, access) == "token_revoked"
    fresh = await world.refresh(client_id, refresh)
    assert await _refusal_reason(world, string(fresh["access_token"])) is None


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("x" * 43, id="unknown-opaque"),
        pytest.param("a.b.c", id="malformed-jwt"),
        pytest.param("not a token at all", id="garbage"),
    ],
)
@pytest.mark.anyio
async def test_revoking_unknown_tokens_is_fine(token: str) -> None:
    world = make_world()
    client_id, _ = await world.register()
    await world.server.revoke({"token": token, "client_id": client_id}, None)


@pytest.mark.anyio
async def test_a_client_cannot_revoke_another_clients_tokens() -> None:
    world = make_world()
    victim, _ = await world.register()
    attacker, _ = await world.register()
    access, refresh = await _tokens(world, victim)
    for token in (access, refresh):
        await world.server.revoke({"token": token, "client_id": attacker}, None)  # silently ignored
    assert await _refusal_reason(world, access) is None
    assert "access_token" in await world.refresh(victim, refresh)


@pytest.mark.parametrize(
    ("form", "authorization", "error", "reason"),
    [
        pytest.param({"token": "t"}, None, "invalid_client", "client_id_missing", id="unauthenticated"),
        pytest.param({"token": "t", "client_id": "nobody"}, None, "invalid_client", "client_unknown", id="unknown"),
        pytest.param({}, "SELF", "invalid_request", "token_missing", id="no-token"),
    ],
)
@pytest.mark.anyio
async def test_revoke_refused(form: dict[str, str], authorization: str | None, error: str, reason: str) -> None:
    world = make_world()
    client_id, secret = await _confidential(world)
    with pytest.raises(Refusal) as caught:
        await world.server.revoke(form, basic(client_id, secret) if authorization == "SELF" else authorization)
    assert (caught.value.error, caught.value.reason) == (error, reason)


@pytest.mark.anyio
async def test_introspect_access_token() -> None:
    world = make_world()
    client_id, secret = await _confidential(world)
    access, _ = await _tokens(world, client_id, secret)
    answer = await world.server.introspect({"token": access}, basic(client_id, secret))
    claims = await world.verify(access)
    assert answer == {
        "active": True,
        "token_type": "Bearer",
        "client_id": client_id,
        "sub": "u-alice",
        "aud": [RESOURCE],
        "iss": "https://as.example",
        "exp": int(NOW) + 300,
        "iat": int(NOW),
        "jti": claims.jwt_id,
        "scope": "customers:read",
    }


@pytest.mark.anyio
async def test_introspect_refresh_token() -> None:
    world = make_world()
    client_id, secret = await _confidential(world)
    _, refresh = await _tokens(world, client_id, secret)
    answer = await world.server.introspect({"token": refresh}, basic(client_id, secret))
    assert (answer["active"], answer["token_type"], answer["sub"], answer["aud"]) == (
        True,
        "refresh_token",
        "u-alice",
        RESOURCE,
    )


@pytest.mark.parametrize(
    "case",
    [
        pytest.param("unknown", id="unknown"),
        pytest.param("expired-access", id="expired-access"),
        pytest.param("revoked-access", id="revoked-access"),
        pytest.param("rotated-refresh", id="rotated-refresh"),
        pytest.param("revoked-family", id="revoked-family"),
        pytest.param("other-clients-access", id="other-clients-access"),
        pytest.param("other-clients-refresh", id="other-clients-refresh"),
    ],
)
@pytest.mark.anyio
async def test_introspect_inactive(case: str) -> None:
    world = make_world()
    client_id, secret = await _confidential(world)
    other_id, other_secret = await _confidential(world)
    access, refresh = await _tokens(world, client_id, secret)
    auth = basic(client_id, secret)
    token = {"unknown": "x" * 43, "rotated-refresh": refresh, "revoked-family": refresh}.get(case, access)
    if case == "expired-access":
        world.clock.now += 300
    elif case == "revoked-access":
        await world.server.revoke({"token": access}, auth)
    elif case == "rotated-refresh":
        await world.token({"grant_type": "refresh_token", "refresh_token": refresh}, secret=secret, client_id=client_id)
    elif case == "revoked-family":
        await world.server.revoke({"token": refresh}, auth)
    elif case.startswith("other-clients"):
        auth = basic(other_id, other_secret)
        token = access if case.endswith("access") else refresh
    assert await world.server.introspect({"token": token}, auth) == {"active": False}


@pytest.mark.anyio
async def test_introspection_needs_a_confidential_client() -> None:
    world = make_world()
    client_id, _ = await world.register()
    access, _ = await _tokens(world, client_id)
    with pytest.raises(Refusal) as caught:
        await world.server.introspect({"token": access, "client_id": client_id}, None)
    assert (caught.value.error, caught.value.reason, caught.value.status) == (
        "invalid_client",
        "introspection_public_client",
        401,
    )


@pytest.mark.anyio
async def test_revocation_check_fails_closed() -> None:
    world = make_world()
    client_id, _ = await world.register()
    access, _ = await _tokens(world, client_id)
    world.store.fail = ConnectionError("database unreachable")
    with pytest.raises(Unavailable):
        await world.verify(access)


@pytest.mark.anyio
async def test_revocation_check_ignores_other_issuers() -> None:
    world = make_world()
    claims = AccessClaims("https://other-idp.example", "s", ("a",), NOW + 60, None, None, "j", None, frozenset(), {})
    world.store.fail = ConnectionError("not even asked")
    assert await world.server.is_revoked(claims) is False


@pytest.mark.anyio
async def test_revocation_check_refuses_unknown_family() -> None:
    """An access token naming a family the store does not know (purged, or forged claims) counts as revoked."""
    world = make_world()
    claims = AccessClaims(
        "https://as.example", "s", (RESOURCE,), NOW + 60, None, None, "j", "c", frozenset(), {"sid": "gone"}
    )
    assert await world.server.is_revoked(claims) is True
