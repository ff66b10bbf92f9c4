"""RFC 8693 token exchange at the authorization server core: the narrow, audience-bound token, and every
way a request is refused."""

from __future__ import annotations

import pytest

from mcp_bastion.errors import ConfigError
from mcp_bastion.oauth.refusal import Refusal
from mcp_bastion.oauth.registration import TOKEN_EXCHANGE
from mcp_bastion.oauth.service import User
from mcp_bastion.oauth.tokenexchange import ACCESS_TOKEN_TYPE
from tests.oauth.asworld import ISSUER, RESOURCE, World, make_world, string

pytestmark = pytest.mark.anyio

UPSTREAM = "https://crm.internal/mcp"
AUDIENCES = {UPSTREAM: ["crm:read", "crm:write"]}


def no_write(user: User, resource: str, requested: frozenset[str], client_id: str) -> frozenset[str]:
    return frozenset(scope for scope in requested if scope != "crm:write" or "admin" in user.roles)


async def gateway_client(
    world: World, grants: list[str] | None = None, method: str = "client_secret_post"
) -> dict[str, str]:
    client_id, secret = await world.register(
        token_endpoint_auth_method=method, grant_types=grants or [TOKEN_EXCHANGE], redirect_uris=[]
    )
    form = {"client_id": client_id}
    if secret is not None:
        form["client_secret"] = secret
    return form


def user_token(world: World, *, roles: list[str] | None = None, lifetime: int = 300) -> str:
    extra: dict[str, object] = {"preferred_username": "alice"}
    if roles:
        extra["roles"] = roles
    return world.signer.mint(
        "u-alice", RESOURCE, scope=["customers:read"], lifetime=lifetime, now=world.clock(), extra=extra
    )


def exchange_form(client: dict[str, str], subject: str, **changes: str) -> dict[str, str]:
    form = {
        **client,
        "grant_type": TOKEN_EXCHANGE,
        "subject_token": subject,
        "subject_token_type": ACCESS_TOKEN_TYPE,
        "resource": UPSTREAM,
    }
    form.update(changes)
    return {name: value for name, value in form.items() if value != "<drop>"}


async def test_the_exchanged_token_is_for_the_upstream_only_and_names_the_actor() -> None:
    world = make_world(exchange_audiences=AUDIENCES, scope_policy=no_write)
    client = await gateway_client(world)
    subject = user_token(world, roles=["staff"])
    answer = await world.token(exchange_form(client, subject, scope="crm:read"))
    assert answer["issued_token_type"] == ACCESS_TOKEN_TYPE
    assert answer["scope"] == "crm:read"
    claims = await world.verify(string(answer["access_token"]), audience=UPSTREAM)
    assert (claims.subject, claims.issuer, claims.client_id) == ("u-alice", ISSUER, client["client_id"])
    assert claims.raw["act"] == {"sub": client["client_id"]}
    assert claims.raw["roles"] == ("staff",)
    assert claims.expires_at <= world.clock() + 300
    # Without a scope: everything the audience offers that the policy grants — here not crm:write.
    assert (await world.token(exchange_form(client, subject)))["scope"] == "crm:read"


async def test_the_new_token_never_outlives_the_subject_token() -> None:
    world = make_world(exchange_audiences=AUDIENCES)
    client = await gateway_client(world)
    answer = await world.token(exchange_form(client, user_token(world, lifetime=40)))
    assert answer["expires_in"] == 40


@pytest.mark.parametrize(
    ("changes", "error", "reason"),
    [
        pytest.param({"subject_token": "<drop>"}, "invalid_request", "subject_token_missing", id="no-subject"),
        pytest.param(
            {"subject_token_type": "urn:ietf:params:oauth:token-type:id_token"},
            "invalid_request",
            "subject_token_type_unsupported",
            id="id-token-type",
        ),
        pytest.param(
            {"actor_token": "x", "actor_token_type": ACCESS_TOKEN_TYPE},
            "invalid_request",
            "actor_token_unsupported",
            id="actor",
        ),
        pytest.param(
            {"requested_token_type": "urn:ietf:params:oauth:token-type:refresh_token"},
            "invalid_request",
            "requested_token_type_unsupported",
            id="asks-for-refresh-token",
        ),
        pytest.param({"resource": "<drop>"}, "invalid_target", "target_missing", id="no-target"),
        pytest.param({"resource": "https://evil.example/mcp"}, "invalid_target", "target_unknown", id="foreign"),
        pytest.param({"resource": RESOURCE}, "invalid_target", "target_unknown", id="our-own-endpoint"),
        pytest.param({"audience": "https://other.example"}, "invalid_target", "target_ambiguous", id="two-targets"),
        pytest.param({"scope": "crm:admin"}, "invalid_scope", "scope_not_offered", id="scope-not-offered"),
        pytest.param({"subject_token": "not.a.token"}, "invalid_grant", "subject_token_invalid", id="garbage"),
    ],
)
async def test_refusals(changes: dict[str, str], error: str, reason: str) -> None:
    world = make_world(exchange_audiences=AUDIENCES)
    client = await gateway_client(world)
    with pytest.raises(Refusal) as refused:
        await world.token(exchange_form(client, user_token(world), **changes))
    assert (refused.value.error, refused.value.reason) == (error, reason)


async def test_a_token_of_another_issuer_is_refused() -> None:
    from joserfc.jwk import ECKey

    from mcp_bastion.oauth.localissuer import LocalIssuer

    world = make_world(exchange_audiences=AUDIENCES)
    client = await gateway_client(world)
    forged = LocalIssuer(ECKey.generate_key("P-256", private=True), ISSUER).mint("u-alice", RESOURCE)
    with pytest.raises(Refusal) as refused:
        await world.token(exchange_form(client, forged))
    assert refused.value.reason == "subject_token_invalid"


async def test_a_revoked_subject_token_is_refused() -> None:
    world = make_world(exchange_audiences=AUDIENCES)
    client = await gateway_client(world)
    subject = user_token(world)
    claims = await world.verify(subject)
    assert claims.jwt_id is not None
    await world.store.revoke_access_token(claims.jwt_id, claims.expires_at)
    with pytest.raises(Refusal) as refused:
        await world.token(exchange_form(client, subject))
    assert refused.value.reason == "subject_token_invalid"


async def test_the_policy_decides_the_scopes() -> None:
    world = make_world(exchange_audiences=AUDIENCES, scope_policy=no_write)
    client = await gateway_client(world)
    with pytest.raises(Refusal) as refused:
        await world.token(exchange_form(client, user_token(world), scope="crm:write"))
    assert (refused.value.error, refused.value.reason) == ("invalid_scope", "scope_not_permitted")
    admin = await world.token(exchange_form(client, user_token(world, roles=["admin"]), scope="crm:write"))
    assert admin["scope"] == "crm:write"


async def test_only_clients_registered_for_the_grant_may_exchange() -> None:
    world = make_world(exchange_audiences=AUDIENCES)
    machine = await gateway_client(world, grants=["client_credentials"])
    with pytest.raises(Refusal) as refused:
        await world.token(exchange_form(machine, user_token(world)))
    assert refused.value.error == "unauthorized_client"


async def test_without_audiences_the_grant_does_not_exist() -> None:
    world = make_world()
    client = await gateway_client(world)
    with pytest.raises(Refusal) as refused:
        await world.token(exchange_form(client, user_token(world)))
    assert refused.value.error == "unsupported_grant_type"
    assert TOKEN_EXCHANGE not in world.server.metadata()["grant_types_supported"]  # type: ignore[operator]
    assert TOKEN_EXCHANGE in make_world(exchange_audiences=AUDIENCES).server.metadata()["grant_types_supported"]  # type: ignore[operator]


def test_our_own_endpoints_cannot_be_exchange_audiences() -> None:
    with pytest.raises(ConfigError, match="own MCP endpoints"):
        make_world(exchange_audiences={RESOURCE: ["customers:read"]})


async def test_public_clients_cannot_register_for_the_grant() -> None:
    world = make_world(exchange_audiences=AUDIENCES)
    with pytest.raises(Refusal) as refused:
        await gateway_client(world, method="none")
    assert refused.value.reason == "grant_type_unsupported"
