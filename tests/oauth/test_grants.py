"""The token endpoint's grants through ``AuthorizationServer.token``: authorization code (+ PKCE, bindings,
lifetime), refresh rotation, client credentials, and the RFC 9068 access tokens they mint."""

from __future__ import annotations

import base64

import orjson
import pytest

from mcp_bastion.oauth.grants import Lifetimes, digest
from mcp_bastion.oauth.refusal import Refusal
from tests.oauth.asworld import ISSUER, NOW, OTHER_RESOURCE, RESOURCE, make_world, string


def _header(token: str) -> dict[str, object]:
    segment = token.split(".")[0]
    header: dict[str, object] = orjson.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    return header


@pytest.mark.anyio
async def test_code_grant() -> None:
    world = make_world()
    client_id, _ = await world.register()
    response = await world.redeem(client_id, await world.code(client_id))
    assert set(response) == {"access_token", "token_type", "expires_in", "scope", "refresh_token"}
    assert (response["token_type"], response["expires_in"], response["scope"]) == ("Bearer", 300, "customers:read")
    token = string(response["access_token"])
    assert _header(token) == {"alg": "ES256", "typ": "at+jwt", "kid": world.signer.kid}
    claims = await world.verify(token)
    assert (claims.issuer, claims.subject, claims.audience) == (ISSUER, "u-alice", (RESOURCE,))
    assert (claims.client_id, claims.scope) == (client_id, frozenset({"customers:read"}))
    assert claims.expires_at - NOW == 300
    assert claims.jwt_id
    family_id = claims.raw["sid"]
    assert family_id in world.store.families
    refresh = string(response["refresh_token"])
    assert len(refresh) == 43
    # Stored by digest only.
    assert digest(refresh) in world.store.refresh
    assert refresh.encode() not in repr(world.store.__dict__).encode()


@pytest.mark.anyio
async def test_code_grant_confidential_client() -> None:
    world = make_world()
    client_id, secret = await world.register(token_endpoint_auth_method="client_secret_basic")
    assert secret is not None
    response = await world.redeem(client_id, await world.code(client_id), secret=secret)
    assert (await world.verify(string(response["access_token"]))).client_id == client_id


@pytest.mark.anyio
async def test_no_refresh_token_without_the_grant() -> None:
    world = make_world()
    client_id, _ = await world.register(grant_types=["authorization_code"])
    assert "refresh_token" not in await world.redeem(client_id, await world.code(client_id))


@pytest.mark.anyio
async def test_resource_may_be_repeated_at_the_token_endpoint() -> None:
    world = make_world()
    client_id, _ = await world.register()
    assert "access_token" in await world.redeem(client_id, await world.code(client_id), resource=RESOURCE)


@pytest.mark.anyio
async def test_configured_access_token_lifetime() -> None:
    world = make_world(lifetimes=Lifetimes(access_token=900))
    client_id, _ = await world.register()
    response = await world.redeem(client_id, await world.code(client_id))
    assert response["expires_in"] == 900


@pytest.mark.parametrize(
    ("elapsed", "outcome"),
    [
        pytest.param(59, None, id="within-60s"),
        pytest.param(60, "code_expired", id="at-60s"),
        pytest.param(3600, "code_expired", id="an-hour-later"),
    ],
)
@pytest.mark.anyio
async def test_code_lifetime(elapsed: float, outcome: str | None) -> None:
    world = make_world()
    client_id, _ = await world.register()
    code = await world.code(client_id)
    world.clock.now += elapsed
    if outcome is None:
        assert "access_token" in await world.redeem(client_id, code)
        return
    with pytest.raises(Refusal) as caught:
        await world.redeem(client_id, code)
    assert (caught.value.error, caught.value.reason) == ("invalid_grant", outcome)


@pytest.mark.parametrize(
    ("form_changes", "error", "reason"),
    [
        pytest.param({"grant_type": ""}, "invalid_request", "grant_type_missing", id="no-grant-type"),
        pytest.param({"grant_type": "password"}, "unsupported_grant_type", "grant_type_unsupported", id="password"),
        pytest.param(
            {"grant_type": "client_credentials"},
            "unauthorized_client",
            "grant_type_not_registered",
            id="grant-not-registered",
        ),
        pytest.param({"code": ""}, "invalid_request", "code_missing", id="no-code"),
        pytest.param({"code": "x" * 43}, "invalid_grant", "code_unknown", id="unknown-code"),
        pytest.param({"redirect_uri": ""}, "invalid_grant", "code_redirect_uri_mismatch", id="no-redirect-uri"),
    ],
)
@pytest.mark.anyio
async def test_code_grant_refused(form_changes: dict[str, str], error: str, reason: str) -> None:
    world = make_world()
    client_id, _ = await world.register()
    code = await world.code(client_id)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": "https://app.example/callback",
        "code_verifier": "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
        "client_id": client_id,
    }
    form.update(form_changes)
    with pytest.raises(Refusal) as caught:
        await world.token({name: value for name, value in form.items() if value})
    assert (caught.value.error, caught.value.reason) == (error, reason)


@pytest.mark.anyio
async def test_refresh_rotates() -> None:
    world = make_world()
    client_id, _ = await world.register()
    first = await world.redeem(client_id, await world.code(client_id))
    world.clock.now += 10
    second = await world.refresh(client_id, string(first["refresh_token"]))
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert second["scope"] == "customers:read"
    old = world.store.refresh[digest(string(first["refresh_token"]))]
    assert old.rotated_at == NOW + 10
    assert old.successor is not None
    assert string(second["refresh_token"]).encode() not in old.successor  # sealed, not plain
    world.clock.now += 10
    third = await world.refresh(client_id, string(second["refresh_token"]))
    claims = await world.verify(string(third["access_token"]))
    assert claims.raw["sid"] == (await world.verify(string(first["access_token"]))).raw["sid"]


@pytest.mark.anyio
async def test_refresh_may_narrow_scope_for_one_token_only() -> None:
    world = make_world()
    client_id, _ = await world.register()
    first = await world.redeem(client_id, await world.code(client_id, scope="customers:read customers:write"))
    narrow = await world.refresh(client_id, string(first["refresh_token"]), scope="customers:read")
    assert narrow["scope"] == "customers:read"
    world.clock.now += 10
    full = await world.refresh(client_id, string(narrow["refresh_token"]))
    assert full["scope"] == "customers:read customers:write"


@pytest.mark.anyio
async def test_family_lifetime_is_absolute() -> None:
    world = make_world(lifetimes=Lifetimes(family=1000))
    client_id, _ = await world.register()
    response = await world.redeem(client_id, await world.code(client_id))
    world.clock.now += 900
    near_end = await world.refresh(client_id, string(response["refresh_token"]))
    assert near_end["expires_in"] == 100  # never outlives the family
    world.clock.now += 100
    with pytest.raises(Refusal) as caught:
        await world.refresh(client_id, string(near_end["refresh_token"]))
    assert (caught.value.error, caught.value.reason) == ("invalid_grant", "family_expired")


@pytest.mark.parametrize(
    ("form_changes", "error", "reason"),
    [
        pytest.param({"refresh_token": ""}, "invalid_request", "refresh_token_missing", id="missing"),
        pytest.param({"refresh_token": "x" * 43}, "invalid_grant", "refresh_unknown", id="unknown"),
        pytest.param({"scope": 'bad"scope'}, "invalid_scope", "scope_malformed", id="malformed-scope"),
    ],
)
@pytest.mark.anyio
async def test_refresh_refused(form_changes: dict[str, str], error: str, reason: str) -> None:
    world = make_world()
    client_id, _ = await world.register()
    response = await world.redeem(client_id, await world.code(client_id))
    form = {"grant_type": "refresh_token", "refresh_token": string(response["refresh_token"]), "client_id": client_id}
    form.update(form_changes)
    with pytest.raises(Refusal) as caught:
        await world.token({name: value for name, value in form.items() if value})
    assert (caught.value.error, caught.value.reason) == (error, reason)


@pytest.mark.anyio
async def test_client_credentials() -> None:
    world = make_world()
    client_id, secret = await world.register(
        token_endpoint_auth_method="client_secret_post", grant_types=["client_credentials"], redirect_uris=[]
    )
    assert secret is not None
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret, "resource": RESOURCE}
    response = await world.token(form)
    assert set(response) == {"access_token", "token_type", "expires_in", "scope"}  # no refresh token
    claims = await world.verify(string(response["access_token"]))
    assert (claims.subject, claims.client_id, claims.audience) == (client_id, client_id, (RESOURCE,))
    assert claims.scope == frozenset({"customers:read", "customers:write"})
    assert "sid" not in claims.raw
    narrow = await world.token({**form, "scope": "customers:read"})
    assert narrow["scope"] == "customers:read"


@pytest.mark.parametrize(
    ("form_changes", "registered_scope", "error", "reason"),
    [
        pytest.param({"resource": ""}, None, "invalid_target", "resource_missing", id="no-resource"),
        pytest.param(
            {"resource": "https://evil.example/mcp"}, None, "invalid_target", "resource_unknown", id="foreign-resource"
        ),
        pytest.param(
            {"scope": "billing:read"}, None, "invalid_scope", "scope_not_allowed", id="scope-of-other-resource"
        ),
        pytest.param(
            {"scope": "customers:write"},
            "customers:read",
            "invalid_scope",
            "scope_not_allowed",
            id="scope-beyond-registration",
        ),
    ],
)
@pytest.mark.anyio
async def test_client_credentials_refused(
    form_changes: dict[str, str], registered_scope: str | None, error: str, reason: str
) -> None:
    world = make_world()
    extra = {} if registered_scope is None else {"scope": registered_scope}
    client_id, secret = await world.register(
        token_endpoint_auth_method="client_secret_post", grant_types=["client_credentials"], **extra
    )
    assert secret is not None
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret, "resource": RESOURCE}
    form.update(form_changes)
    with pytest.raises(Refusal) as caught:
        await world.token({name: value for name, value in form.items() if value})
    assert (caught.value.error, caught.value.reason) == (error, reason)


@pytest.mark.anyio
async def test_client_credentials_other_resource_gets_its_scopes() -> None:
    world = make_world()
    client_id, secret = await world.register(
        token_endpoint_auth_method="client_secret_post", grant_types=["client_credentials"]
    )
    assert secret is not None
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    response = await world.token({**form, "resource": OTHER_RESOURCE})
    assert response["scope"] == "billing:read"
