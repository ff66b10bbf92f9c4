"""The front channel of ``AuthorizationServer`` (what the pages call): /authorize validation, pending
authorizations, approve/deny redirects, scope policy, consent; plus construction and client lookup."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from mcp_bastion.errors import ConfigError
from mcp_bastion.oauth.grants import Lifetimes
from mcp_bastion.oauth.localissuer import LocalIssuer
from mcp_bastion.oauth.memstore import MemoryOAuthStore
from mcp_bastion.oauth.refusal import Refusal
from mcp_bastion.oauth.sealing import MemorySealer
from mcp_bastion.oauth.server import AuthorizationServer, response_url
from mcp_bastion.oauth.service import AuthorizationService, User
from tests.oauth.asworld import (
    ALICE,
    BOB,
    ISSUER,
    NOW,
    OTHER_RESOURCE,
    REDIRECT,
    RESOURCE,
    make_world,
    redirect_params,
    signing_key,
    string,
)


def test_implements_the_service_protocol() -> None:
    service: AuthorizationService = make_world().server
    assert service is not None


@pytest.mark.anyio
async def test_begin() -> None:
    world = make_world()
    client_id, _ = await world.register()
    pending = await world.server.begin(world.query(client_id))
    assert pending.client.client_id == client_id
    assert (pending.client.name, pending.client.redirect_host, pending.client.kind) == (
        "Test App",
        "app.example",
        "registered",
    )
    assert pending.scopes == ("customers:read",)
    assert pending.scope_descriptions == {"customers:read": "Read customer records"}
    assert (pending.resource, pending.expires_at) == (RESOURCE, NOW + 600)
    assert await world.server.pending(pending.id) == pending


@pytest.mark.anyio
async def test_begin_defaults_to_every_scope_the_resource_offers() -> None:
    world = make_world()
    client_id, _ = await world.register()
    pending = await world.server.begin(world.query(client_id, scope=None))
    assert pending.scopes == ("customers:read", "customers:write")


@pytest.mark.anyio
async def test_begin_limits_to_registered_scopes() -> None:
    world = make_world()
    client_id, _ = await world.register(scope="customers:read")
    assert (await world.server.begin(world.query(client_id, scope=None))).scopes == ("customers:read",)
    with pytest.raises(Refusal) as caught:
        await world.server.begin(world.query(client_id, scope="customers:write"))
    assert (caught.value.error, caught.value.reason) == ("invalid_scope", "scope_not_allowed")


@pytest.mark.parametrize(
    ("overrides", "error", "reason", "redirected"),
    [
        pytest.param({"client_id": None}, "invalid_request", "client_id_missing", False, id="no-client-id"),
        pytest.param({"client_id": "nobody"}, "invalid_request", "client_unknown", False, id="unknown-client"),
        pytest.param({"redirect_uri": None}, "invalid_request", "redirect_uri_missing", False, id="no-redirect-uri"),
        pytest.param(
            {"redirect_uri": "https://evil.example/cb"},
            "invalid_request",
            "redirect_uri_mismatch",
            False,
            id="foreign-redirect-uri",
        ),
        pytest.param({"state": "s" * 2049}, "invalid_request", "state_too_long", False, id="state-too-long"),
        pytest.param(
            {"response_type": "token"}, "unsupported_response_type", "response_type_unsupported", True, id="implicit"
        ),
        pytest.param(
            {"response_type": None},
            "unsupported_response_type",
            "response_type_unsupported",
            True,
            id="no-response-type",
        ),
        pytest.param(
            {"response_type": "code id_token"},
            "unsupported_response_type",
            "response_type_unsupported",
            True,
            id="hybrid",
        ),
        pytest.param({"code_challenge": None}, "invalid_request", "pkce_challenge_missing", True, id="no-pkce"),
        pytest.param(
            {"code_challenge_method": "plain"}, "invalid_request", "pkce_method_unsupported", True, id="pkce-plain"
        ),
        pytest.param(
            {"code_challenge_method": None},
            "invalid_request",
            "pkce_method_unsupported",
            True,
            id="pkce-method-missing",
        ),
        pytest.param({"resource": None}, "invalid_target", "resource_missing", True, id="no-resource"),
        pytest.param(
            {"resource": "https://evil.example/mcp"}, "invalid_target", "resource_unknown", True, id="foreign-resource"
        ),
        pytest.param(
            {"resource": "https://gw.example/mcp"}, "invalid_target", "resource_unknown", True, id="resource-prefix"
        ),
        pytest.param(
            {"resource": RESOURCE + "/"}, "invalid_target", "resource_unknown", True, id="resource-trailing-slash"
        ),
        pytest.param({"scope": "admin"}, "invalid_scope", "scope_not_allowed", True, id="unknown-scope"),
        pytest.param(
            {"scope": "billing:read"}, "invalid_scope", "scope_not_allowed", True, id="scope-of-another-resource"
        ),
        pytest.param({"scope": 'bad"scope'}, "invalid_scope", "scope_malformed", True, id="malformed-scope"),
    ],
)
@pytest.mark.anyio
async def test_begin_refused(overrides: dict[str, str | None], error: str, reason: str, redirected: bool) -> None:
    world = make_world()
    client_id, _ = await world.register()
    with pytest.raises(Refusal) as caught:
        await world.server.begin(world.query(client_id, **overrides))
    assert (caught.value.error, caught.value.reason) == (error, reason)
    if redirected:
        assert (caught.value.redirect_uri, caught.value.state) == (REDIRECT, "state-123")
    else:
        assert caught.value.redirect_uri is None
    assert world.store.pending == {}


@pytest.mark.anyio
async def test_begin_refuses_client_without_code_grant() -> None:
    world = make_world()
    client_id, _ = await world.register(
        token_endpoint_auth_method="client_secret_basic", grant_types=["client_credentials"]
    )
    with pytest.raises(Refusal) as caught:
        await world.server.begin(world.query(client_id))
    assert (caught.value.error, caught.value.reason) == ("unauthorized_client", "grant_type_not_registered")
    assert caught.value.redirect_uri == REDIRECT


@pytest.mark.anyio
async def test_approve_redirects_with_code_state_iss() -> None:
    world = make_world()
    client_id, _ = await world.register()
    pending = await world.server.begin(world.query(client_id, state="a b&c=d/é"))
    url = await world.server.approve(pending.id, ALICE, frozenset(pending.scopes))
    assert url.startswith(REDIRECT + "?")
    params = redirect_params(url)
    assert set(params) == {"code", "state", "iss"}
    assert (params["state"], params["iss"]) == ("a b&c=d/é", ISSUER)
    assert len(params["code"]) == 43


@pytest.mark.anyio
async def test_approve_without_state_sends_none() -> None:
    world = make_world()
    client_id, _ = await world.register()
    pending = await world.server.begin(world.query(client_id, state=None))
    assert set(redirect_params(await world.server.approve(pending.id, ALICE, frozenset(pending.scopes)))) == {
        "code",
        "iss",
    }


@pytest.mark.anyio
async def test_pending_is_used_once() -> None:
    world = make_world()
    client_id, _ = await world.register()
    pending = await world.server.begin(world.query(client_id))
    await world.server.approve(pending.id, ALICE, frozenset(pending.scopes))
    for attempt in (world.server.approve(pending.id, ALICE, frozenset()), world.server.deny(pending.id)):
        with pytest.raises(Refusal) as caught:
            await attempt
        assert (caught.value.error, caught.value.reason) == ("invalid_request", "pending_unknown")


@pytest.mark.anyio
async def test_pending_expires() -> None:
    world = make_world()
    client_id, _ = await world.register()
    pending = await world.server.begin(world.query(client_id))
    world.clock.now += 600
    with pytest.raises(Refusal) as caught:
        await world.server.pending(pending.id)
    assert caught.value.reason == "pending_unknown"
    with pytest.raises(Refusal):
        await world.server.approve(pending.id, ALICE, frozenset(pending.scopes))


@pytest.mark.anyio
async def test_deny() -> None:
    world = make_world()
    client_id, _ = await world.register()
    pending = await world.server.begin(world.query(client_id))
    params = redirect_params(await world.server.deny(pending.id))
    assert (params["error"], params["state"], params["iss"]) == ("access_denied", "state-123", ISSUER)
    assert "code" not in params


def _read_only(user: User, resource: str, requested: frozenset[str], client_id: str) -> frozenset[str]:
    return frozenset({"customers:read"}) if "staff" in user.roles else frozenset()


@pytest.mark.anyio
async def test_scope_policy_limits_what_the_user_grants() -> None:
    world = make_world(scope_policy=_read_only)
    client_id, _ = await world.register()
    pending = await world.server.begin(world.query(client_id, scope="customers:read customers:write"))
    assert await world.server.allowed_scopes(ALICE, pending) == {"customers:read"}
    assert await world.server.allowed_scopes(BOB, pending) == frozenset()
    disabled = User(id="u-x", username="x", roles=frozenset({"staff"}), disabled=True)
    assert await world.server.allowed_scopes(disabled, pending) == frozenset()
    # The page passes more than allowed: the server keeps only the intersection.
    url = await world.server.approve(pending.id, ALICE, frozenset({"customers:read", "customers:write", "x"}))
    token = await world.redeem(client_id, redirect_params(url)["code"])
    assert token["scope"] == "customers:read"


@pytest.mark.anyio
async def test_approve_with_nothing_grantable_is_access_denied() -> None:
    world = make_world(scope_policy=_read_only)
    client_id, _ = await world.register()
    pending = await world.server.begin(world.query(client_id))
    params = redirect_params(await world.server.approve(pending.id, BOB, frozenset(pending.scopes)))
    assert params["error"] == "access_denied"
    assert world.store.codes == {}


@pytest.mark.anyio
async def test_consent_remembered_and_revocable() -> None:
    world = make_world()
    client_id, _ = await world.register()
    assert await world.server.consent(ALICE, client_id) is None
    tokens = await world.redeem(client_id, await world.code(client_id))
    consent = await world.server.consent(ALICE, client_id)
    assert consent is not None
    assert (consent.scopes, consent.resource, consent.revoked) == (frozenset({"customers:read"}), RESOURCE, False)
    assert await world.server.consent(BOB, client_id) is None

    assert await world.server.revoke_consent(ALICE.id, client_id) == 1
    assert await world.server.consent(ALICE, client_id) is None
    with pytest.raises(Refusal) as caught:  # the grant made under the consent is gone too
        await world.refresh(client_id, string(tokens["refresh_token"]))
    assert caught.value.reason == "family_revoked"


@pytest.mark.anyio
async def test_loopback_client_any_port_but_same_uri_at_token() -> None:
    world = make_world()
    client_id, _ = await world.register(redirect_uris=["http://127.0.0.1/callback"])
    code = await world.code(client_id, redirect_uri="http://127.0.0.1:49152/callback")
    with pytest.raises(Refusal) as caught:
        await world.redeem(client_id, code, redirect_uri="http://127.0.0.1:49153/callback")
    assert caught.value.reason == "code_redirect_uri_mismatch"
    code = await world.code(client_id, redirect_uri="http://127.0.0.1:49152/callback")
    assert "access_token" in await world.redeem(client_id, code, redirect_uri="http://127.0.0.1:49152/callback")


class _Documents:
    def __init__(self, documents: Mapping[str, Mapping[str, object]]) -> None:
        self.documents = documents
        self.fetched: list[str] = []

    async def fetch(self, url: str) -> Mapping[str, object]:
        self.fetched.append(url)
        if url not in self.documents:
            raise Refusal("invalid_client", "metadata_document_unreachable")
        return self.documents[url]


CIMD_URL = "https://app.example/oauth/client.json"


@pytest.mark.anyio
async def test_client_id_metadata_document() -> None:
    documents = _Documents(
        {
            CIMD_URL: {
                "client_id": CIMD_URL,
                "client_name": "Doc App",
                "redirect_uris": [REDIRECT],
                "grant_types": ["authorization_code", "refresh_token"],
            }
        }
    )
    world = make_world(metadata_documents=documents)
    pending = await world.server.begin(world.query(CIMD_URL))
    assert (pending.client.kind, pending.client.name) == ("metadata", "Doc App")
    tokens = await world.redeem(CIMD_URL, await world.code(CIMD_URL))
    assert "refresh_token" in tokens
    assert documents.fetched == [CIMD_URL]  # cached
    world.clock.now += 3600
    await world.server.begin(world.query(CIMD_URL))
    assert documents.fetched == [CIMD_URL, CIMD_URL]  # fetched again after the TTL
    assert world.server.metadata()["client_id_metadata_document_supported"] is True


@pytest.mark.anyio
async def test_client_id_metadata_document_unreachable_is_unknown_client() -> None:
    world = make_world(metadata_documents=_Documents({}))
    with pytest.raises(Refusal) as caught:
        await world.server.begin(world.query(CIMD_URL))
    assert (caught.value.reason, caught.value.redirect_uri) == ("client_unknown", None)


@pytest.mark.anyio
async def test_client_id_metadata_document_for_another_url_is_unknown_client() -> None:
    documents = _Documents({CIMD_URL: {"client_id": "https://evil.example/c.json", "redirect_uris": [REDIRECT]}})
    world = make_world(metadata_documents=documents)
    with pytest.raises(Refusal) as caught:
        await world.server.begin(world.query(CIMD_URL))
    assert (caught.value.reason, caught.value.redirect_uri) == ("client_unknown", None)
    assert world.store.clients == {}


def test_response_url_keeps_existing_query() -> None:
    assert response_url("https://a.example/cb?x=1", {"code": "c", "state": None}) == "https://a.example/cb?x=1&code=c"


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"issuer": "https://other.example"}, id="signer-issuer-differs"),
        pytest.param({"resources": {}}, id="no-resources"),
        pytest.param({"resources": {"http://gw.example/mcp": ["a"]}}, id="http-resource"),
        pytest.param({"resources": {RESOURCE: ["bad scope"]}}, id="bad-scope"),
        pytest.param({"registration_policy": "token"}, id="token-policy-no-tokens"),
    ],
)
def test_construction_refused(changes: dict[str, object]) -> None:
    arguments: dict[str, object] = {
        "issuer": ISSUER,
        "signer": LocalIssuer(signing_key(), ISSUER),
        "store": MemoryOAuthStore(),
        "sealer": MemorySealer(),
        "resources": {RESOURCE: ["a"], OTHER_RESOURCE: []},
    }
    arguments.update(changes)
    with pytest.raises(ConfigError):
        AuthorizationServer(**arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "lifetimes",
    [
        pytest.param({"access_token": 0}, id="access-zero"),
        pytest.param({"access_token": 3601}, id="access-over-an-hour"),
        pytest.param({"code": 61}, id="code-over-60s"),
        pytest.param({"family": 366 * 86400}, id="family-over-a-year"),
        pytest.param({"refresh_grace": -1}, id="grace-negative"),
        pytest.param({"refresh_grace": 61}, id="grace-over-a-minute"),
        pytest.param({"pending": 0}, id="pending-zero"),
    ],
)
def test_lifetime_caps(lifetimes: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        Lifetimes(**lifetimes)  # type: ignore[arg-type]
