"""Federated login (mcp_bastion.oauth.federation) against the in-memory IdP: settings, the login state, the
authorization request, the callback's checks in order, and the mapping of claims to a ``User``."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
from joserfc.jwk import ECKey

from mcp_bastion.errors import ConfigError
from mcp_bastion.oauth import federation
from mcp_bastion.oauth.federation import (
    REASONS,
    STATE_LIFETIME_SECONDS,
    FederatedLogin,
    FederationState,
    OIDCProvider,
    map_claims,
)
from mcp_bastion.oauth.refusal import Refusal
from mcp_bastion.oauth.service import OAuthError
from tests.oauth.support import FakeClock, signer

from .fakes import CLIENT_ID, CLIENT_SECRET, DROP, ISSUER, REDIRECT_URI, Account, FakeIdP, json_response

pytestmark = pytest.mark.anyio

NOW = 1_800_000_000.0
ROLES: Mapping[str, frozenset[str]] = {"analysts": frozenset({"analyst"}), "admins": frozenset({"admin", "analyst"})}


def _provider(**changes: Any) -> OIDCProvider:
    settings: dict[str, Any] = {
        "issuer": ISSUER,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "redirect_uri": REDIRECT_URI,
        "group_roles": ROLES,
    }
    settings.update(changes)
    return OIDCProvider(**settings)


@pytest.fixture(scope="module")
def idp_key() -> ECKey:
    return ECKey.generate_key("P-256", parameters={"kid": "idp-1"}, private=True)


@pytest.fixture
def idp(idp_key: ECKey) -> FakeIdP:
    return FakeIdP(key=idp_key, now=NOW)


async def _login(idp: FakeIdP, provider: OIDCProvider | None = None) -> FederatedLogin:
    login = FederatedLogin(provider or _provider(), http=idp, keys=idp.keys, clock=FakeClock(NOW))
    await login.discover()
    return login


async def _refused(idp: FakeIdP, params_change: Mapping[str, object] | None = None, **provider: Any) -> Refusal:
    """Run one login, with the callback's parameters changed (``DROP`` removes one); return the refusal."""
    login = await _login(idp, _provider(**provider))
    url, state = login.start("pending-1")
    params = {**idp.authorize(url), **(params_change or {})}
    with pytest.raises(Refusal) as caught:
        await login.finish({k: str(v) for k, v in params.items() if v is not DROP}, state)
    assert caught.value.reason in REASONS
    return caught.value


# --- the happy path ---


async def test_login_maps_user_and_roles(idp: FakeIdP) -> None:
    login = await _login(idp)
    url, state = login.start("pending-1")
    user, pending_id = await login.finish(idp.authorize(url), state)
    assert pending_id == "pending-1"
    assert user.id == f"{ISSUER}#248289761001"
    assert user.username == "alice"
    assert user.roles == {"analyst"}
    assert not user.disabled


async def test_claims_from_userinfo_when_id_token_has_only_sub(idp: FakeIdP) -> None:
    idp.claims_in_id_token = False
    idp.account = Account(claims={"preferred_username": "bob", "groups": ["admins", "unmapped"]})
    login = await _login(idp)
    url, state = login.start("p")
    user, _ = await login.finish(idp.authorize(url), state)
    assert (user.username, user.roles) == ("bob", frozenset({"admin", "analyst"}))
    assert ("GET", f"{ISSUER}/userinfo") in idp.requests


async def test_userinfo_can_be_turned_off(idp: FakeIdP) -> None:
    idp.claims_in_id_token = False
    login = await _login(idp, _provider(use_userinfo=False))
    url, state = login.start("p")
    user, _ = await login.finish(idp.authorize(url), state)
    assert user.username == "248289761001"  # only sub was available
    assert ("GET", f"{ISSUER}/userinfo") not in idp.requests


async def test_public_client_with_pkce_only(idp: FakeIdP) -> None:
    idp.client_secret = None
    login = await _login(idp, _provider(client_secret=None))
    url, state = login.start("p")
    user, _ = await login.finish(idp.authorize(url), state)
    assert user.username == "alice"


async def test_authorization_request(idp: FakeIdP) -> None:
    randoms = iter(["state-value-" + "s" * 31, "nonce-value-" + "n" * 31, "verifier-" + "v" * 34])
    login = FederatedLogin(
        _provider(scopes=("openid", "profile", "groups")),
        http=idp,
        keys=idp.keys,
        clock=FakeClock(NOW),
        random=lambda: next(randoms),
    )
    await login.discover()
    url, state = login.start("pending-9")
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{ISSUER}/authorize"
    verifier_digest = hashlib.sha256(state.code_verifier.encode()).digest()
    assert query == {
        "tenant": "acme",  # the endpoint's own query is kept
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "scope": "openid profile groups",
        "state": state.state,
        "nonce": state.nonce,
        "code_challenge": base64.urlsafe_b64encode(verifier_digest).rstrip(b"=").decode(),
        "code_challenge_method": "S256",
    }
    assert state == FederationState(
        ISSUER,
        "state-value-" + "s" * 31,
        "nonce-value-" + "n" * 31,
        "verifier-" + "v" * 34,
        "pending-9",
        int(NOW) + STATE_LIFETIME_SECONDS,
    )


async def test_default_randomness_is_256_bits_and_fresh(idp: FakeIdP) -> None:
    login = await _login(idp)
    _, one = login.start("p")
    _, two = login.start("p")
    for value in (one.state, one.nonce, one.code_verifier):
        assert len(base64.urlsafe_b64decode(value + "=")) == 32
    assert len({one.state, one.nonce, one.code_verifier, two.state, two.nonce, two.code_verifier}) == 6


# --- the callback's checks ---


@pytest.mark.parametrize(
    ("change", "reason", "error"),
    [
        pytest.param({"state": "forged"}, "state_mismatch", "invalid_request", id="state-other"),
        pytest.param({"state": DROP}, "state_mismatch", "invalid_request", id="state-missing"),
        pytest.param({"state": "é"}, "state_mismatch", "invalid_request", id="state-non-ascii"),
        pytest.param({"iss": "https://evil.example"}, "iss_mismatch", "invalid_request", id="iss-other"),
        pytest.param({"iss": DROP}, "iss_missing", "invalid_request", id="iss-missing-though-advertised"),
        pytest.param({"code": DROP}, "code_missing", "invalid_request", id="no-code"),
        pytest.param({"code": "made-up"}, "token_request_refused", "server_error", id="code-unknown"),
        pytest.param({"error": "access_denied", "code": DROP}, "idp_error", "access_denied", id="idp-denied"),
        pytest.param({"error": "login_required"}, "idp_error", "access_denied", id="idp-other-error"),
    ],
)
async def test_callback_refusals(idp: FakeIdP, change: Mapping[str, object], reason: str, error: str) -> None:
    refusal = await _refused(idp, change)
    assert (refusal.reason, refusal.error) == (reason, error)
    assert isinstance(refusal, OAuthError)


async def test_idp_denial_is_access_denied(idp: FakeIdP) -> None:
    login = await _login(idp)
    url, state = login.start("p")
    with pytest.raises(OAuthError) as caught:
        await login.finish(idp.authorize(url, deny=True), state)
    assert caught.value.error == "access_denied"
    assert "the user said no" not in caught.value.description  # the IdP's free text is not relayed


async def test_iss_optional_when_not_advertised(idp: FakeIdP) -> None:
    idp.send_iss = False
    login = await _login(idp)
    url, state = login.start("p")
    params = idp.authorize(url)
    assert "iss" not in params
    user, _ = await login.finish(params, state)
    assert user.username == "alice"


async def test_state_checks(idp: FakeIdP) -> None:
    login = await _login(idp)
    url, state = login.start("p")
    params = idp.authorize(url)
    for bad, reason in [
        (replace(state, issuer="https://other-idp.example"), "state_mismatch"),
        (replace(state, expires_at=int(NOW)), "state_expired"),
        (replace(state, state=state.state[:-1] + "x"), "state_mismatch"),
    ]:
        with pytest.raises(Refusal) as caught:
            await login.finish(params, bad)
        assert caught.value.reason == reason
    # None of that consumed the code: the honest state still works.
    user, _ = await login.finish(params, state)
    assert user.username == "alice"


async def test_code_is_single_use(idp: FakeIdP) -> None:
    login = await _login(idp)
    url, state = login.start("p")
    params = idp.authorize(url)
    await login.finish(params, state)
    with pytest.raises(Refusal) as caught:
        await login.finish(params, state)
    assert caught.value.reason == "token_request_refused"


async def test_pkce_verifier_is_sent(idp: FakeIdP) -> None:
    login = await _login(idp)
    url, state = login.start("p")
    with pytest.raises(Refusal) as caught:
        await login.finish(idp.authorize(url), replace(state, code_verifier="x" * 43))
    assert caught.value.reason == "token_request_refused"


async def test_nonce_tampered_in_state(idp: FakeIdP) -> None:
    login = await _login(idp)
    url, state = login.start("p")
    with pytest.raises(Refusal) as caught:
        await login.finish(idp.authorize(url), replace(state, nonce="n" * 43))
    assert caught.value.reason == "id_token_nonce_mismatch"


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        pytest.param({"id_token_claims": {"aud": "someone-else"}}, "id_token_audience_mismatch", id="wrong-aud"),
        pytest.param({"id_token_claims": {"exp": NOW - 120}}, "id_token_expired", id="expired"),
        pytest.param({"id_token_claims": {"iss": "https://evil.example"}}, "id_token_issuer_mismatch", id="iss"),
        pytest.param({"id_token_claims": {"nonce": "replayed"}}, "id_token_nonce_mismatch", id="nonce"),
        pytest.param({"id_token_claims": {"nonce": DROP}}, "id_token_missing_claim", id="no-nonce"),
        pytest.param({"id_token_header": {"alg": "none"}}, "id_token_alg_forbidden", id="alg-none"),
        pytest.param({"id_token_header": {"alg": "HS256"}}, "id_token_alg_forbidden", id="alg-hs256"),
        pytest.param({"id_token_header": {"kid": "rotated-away"}}, "id_token_key_unknown", id="unknown-kid"),
    ],
)
async def test_tampered_id_token(idp: FakeIdP, tamper: dict[str, Any], reason: str) -> None:
    for name, value in tamper.items():
        setattr(idp, name, value)
    if tamper.get("id_token_header", {}).get("alg") in ("none", "HS256"):
        idp.sign_with = lambda _message: b"\x00" * 32
    refusal = await _refused(idp)
    assert refusal.reason == reason


async def test_id_token_signed_by_another_key(idp: FakeIdP) -> None:
    forger = ECKey.generate_key("P-256", parameters={"kid": str(idp.key.kid)}, private=True)
    idp.sign_with = signer("ES256", forger)
    assert (await _refused(idp)).reason == "id_token_signature_invalid"


async def test_userinfo_for_another_subject(idp: FakeIdP) -> None:
    idp.userinfo_overrides = {"sub": "someone-else"}
    assert (await _refused(idp)).reason == "userinfo_subject_mismatch"


async def test_token_response_without_id_token(idp: FakeIdP) -> None:
    idp.token_response = lambda document: json_response({k: v for k, v in document.items() if k != "id_token"})
    assert (await _refused(idp)).reason == "token_response_invalid"


async def test_no_secret_in_any_refusal(idp: FakeIdP) -> None:
    idp.id_token_claims = {"aud": "someone-else"}
    login = await _login(idp)
    url, state = login.start("p")
    params = idp.authorize(url)
    with pytest.raises(Refusal) as caught:
        await login.finish(params, state)
    text = f"{caught.value} {caught.value.description}"
    for secret in (params["code"], state.nonce, state.code_verifier, state.state, CLIENT_SECRET):
        assert secret not in text


# --- discovery ---


@pytest.mark.parametrize(
    ("metadata", "provider", "reason"),
    [
        pytest.param({"issuer": "https://idp.example/"}, {}, "discovery_issuer_mismatch", id="issuer-mismatch"),
        pytest.param(
            {"token_endpoint_auth_methods_supported": ["private_key_jwt"]}, {}, "discovery_invalid", id="no-basic"
        ),
        pytest.param(
            {"token_endpoint_auth_methods_supported": ["client_secret_basic"]},
            {"client_secret": None},
            "discovery_invalid",
            id="public-client-not-offered",
        ),
        pytest.param({"id_token_signing_alg_values_supported": ["PS512"]}, {}, "discovery_invalid", id="no-common-alg"),
    ],
)
async def test_discovery_refusals(
    idp: FakeIdP, metadata: dict[str, object], provider: dict[str, Any], reason: str
) -> None:
    idp.metadata_overrides = metadata
    login = FederatedLogin(_provider(**provider), http=idp, keys=idp.keys)
    with pytest.raises(Refusal) as caught:
        await login.discover()
    assert caught.value.reason == reason
    assert login.metadata is None
    with pytest.raises(Refusal) as caught:
        login.start("p")
    assert caught.value.reason == "idp_not_discovered"


async def test_not_discovered_yet(idp: FakeIdP) -> None:
    login = FederatedLogin(_provider(), http=idp, keys=idp.keys)
    state = FederationState(ISSUER, "s", "n", "v", "p", int(NOW) + 60)
    with pytest.raises(Refusal) as caught:
        await login.finish({"state": "s", "code": "c"}, state)
    assert caught.value.reason == "idp_not_discovered"
    assert caught.value.status == 503


async def test_jwks_unreachable_at_discovery(idp_key: ECKey) -> None:
    # The default key source: a RemoteKeySet, fetched during discover() so a broken IdP shows at startup.
    # Port 1 on loopback refuses the connection at once.
    local = FakeIdP(
        key=idp_key, issuer="http://127.0.0.1:8080", metadata_overrides={"jwks_uri": "http://127.0.0.1:1/jwks"}
    )
    provider = _provider(issuer=local.issuer, redirect_uri="http://127.0.0.1:9/cb", allow_insecure_http=True)
    login = FederatedLogin(provider, http=local)
    with pytest.raises(Refusal) as caught:
        await login.discover()
    assert caught.value.reason == "discovery_invalid"
    assert login.metadata is None
    await login.aclose()


# --- the login state cookie ---


def test_state_round_trip() -> None:
    state = FederationState(ISSUER, "s" * 43, "n" * 43, "v" * 43, "pending-1", 1_800_000_600)
    assert FederationState.load(state.dump()) == state
    assert FederationState.load(state.dump().encode()) == state
    assert len(state.dump()) < 300
    assert "v" * 43 not in repr(state)


@pytest.mark.parametrize(
    "data",
    [
        "",
        "{}",
        "[]",
        "not json",
        orjson.dumps([2, ISSUER, "s", "n", "v", "p", 1]).decode(),
        orjson.dumps([1, ISSUER, "s", "n", "v", "p"]).decode(),
        orjson.dumps([1, ISSUER, "", "n", "v", "p", 1]).decode(),
        orjson.dumps([1, ISSUER, "s", "n", 5, "p", 1]).decode(),
        orjson.dumps([1, ISSUER, "s", "n", "v", "p", "1"]).decode(),
        orjson.dumps([1, ISSUER, "s", "n", "v", "p", True]).decode(),
    ],
)
def test_state_load_refuses_garbage(data: str) -> None:
    with pytest.raises(Refusal) as caught:
        FederationState.load(data)
    assert caught.value.reason == "state_invalid"


# --- claims to User ---


@pytest.mark.parametrize(
    ("claims", "settings", "username", "roles"),
    [
        pytest.param({"preferred_username": "al"}, {}, "al", set(), id="preferred-username"),
        pytest.param({"email": "a@x.io", "email_verified": True}, {}, "a@x.io", set(), id="verified-email"),
        pytest.param({"email": "a@x.io", "email_verified": "true"}, {}, "a@x.io", set(), id="verified-as-string"),
        pytest.param({"email": "a@x.io"}, {}, "sub-1", set(), id="unverified-email-skipped"),
        pytest.param({"email": "a@x.io", "email_verified": False}, {}, "sub-1", set(), id="email-verified-false"),
        pytest.param({"upn": "a@corp"}, {"username_claims": ("upn", "sub")}, "a@corp", set(), id="custom-claim"),
        pytest.param({"groups": ["admins"]}, {}, "sub-1", {"admin", "analyst"}, id="group-to-roles"),
        pytest.param({"groups": "analysts"}, {}, "sub-1", {"analyst"}, id="single-group-string"),
        pytest.param({"groups": ["admin"]}, {}, "sub-1", set(), id="group-named-like-role-grants-nothing"),
        pytest.param({"roles": ["admins"]}, {"groups_claim": "roles"}, "sub-1", {"admin", "analyst"}, id="roles-claim"),
        pytest.param({"groups": ["admins"]}, {"groups_claim": None}, "sub-1", set(), id="groups-ignored"),
        pytest.param({}, {"default_roles": frozenset({"user"})}, "sub-1", {"user"}, id="default-roles"),
        pytest.param(
            {"email": "a@Corp.Example", "email_verified": True},
            {"allowed_email_domains": frozenset({"corp.example"})},
            "a@Corp.Example",
            set(),
            id="domain-allowed-case-insensitive",
        ),
    ],
)
def test_map_claims(claims: dict[str, object], settings: dict[str, Any], username: str, roles: set[str]) -> None:
    user = map_claims(_provider(**settings), {"sub": "sub-1", **claims})
    assert user.id == f"{ISSUER}#sub-1"
    assert (user.username, user.roles) == (username, frozenset(roles))


@pytest.mark.parametrize(
    ("claims", "settings", "reason"),
    [
        pytest.param({"sub": ""}, {}, "claims_malformed", id="empty-sub"),
        pytest.param({"sub": 42}, {}, "claims_malformed", id="sub-number"),
        pytest.param({"groups": [1, 2]}, {}, "claims_malformed", id="groups-not-strings"),
        pytest.param({"groups": {"a": 1}}, {}, "claims_malformed", id="groups-object"),
        pytest.param({}, {"username_claims": ("upn",)}, "username_missing", id="no-username"),
        pytest.param({"preferred_username": "a\nb"}, {}, "username_invalid", id="control-character"),
        pytest.param({"preferred_username": "a\u200bb"}, {}, "username_invalid", id="zero-width"),
        pytest.param({"preferred_username": "a" * 300}, {}, "username_invalid", id="too-long"),
        pytest.param(
            {"email": "a@evil.example", "email_verified": True},
            {"allowed_email_domains": frozenset({"corp.example"})},
            "email_domain_forbidden",
            id="domain-other",
        ),
        pytest.param(
            {"email": "a@corp.example"},
            {"allowed_email_domains": frozenset({"corp.example"})},
            "email_domain_forbidden",
            id="domain-unverified",
        ),
        pytest.param(
            {"email": "a@corp.example.evil", "email_verified": True},
            {"allowed_email_domains": frozenset({"corp.example"})},
            "email_domain_forbidden",
            id="domain-suffix-trick",
        ),
    ],
)
def test_map_claims_refusals(claims: dict[str, object], settings: dict[str, Any], reason: str) -> None:
    with pytest.raises(Refusal) as caught:
        map_claims(_provider(**settings), {"sub": "sub-1", **claims})
    assert caught.value.reason == reason
    assert caught.value.error == "access_denied"


# --- settings ---


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"issuer": "http://idp.example"}, id="http-issuer"),
        pytest.param({"issuer": "http://127.0.0.1:8080"}, id="loopback-http-without-flag"),
        pytest.param({"issuer": "http://localhost:8080", "allow_insecure_http": True}, id="localhost-name"),
        pytest.param({"issuer": "https://idp.example?tenant=1"}, id="issuer-query"),
        pytest.param({"redirect_uri": "http://gw.example/cb"}, id="http-redirect"),
        pytest.param({"client_id": ""}, id="empty-client-id"),
        pytest.param({"client_secret": ""}, id="empty-secret"),
        pytest.param({"scopes": ("profile", "email")}, id="no-openid"),
        pytest.param({"scopes": ("openid", "a b")}, id="scope-with-space"),
        pytest.param({"username_claims": ()}, id="no-username-claims"),
        pytest.param({"algorithms": frozenset({"HS256"})}, id="hs256"),
        pytest.param({"algorithms": frozenset({"none"})}, id="none"),
        pytest.param({"algorithms": frozenset()}, id="no-algorithms"),
        pytest.param({"leeway_seconds": 3600}, id="leeway"),
        pytest.param({"group_roles": {"admins": "admin"}}, id="role-as-bare-string"),
        pytest.param({"group_roles": {"": frozenset({"x"})}}, id="empty-group"),
        pytest.param({"allowed_email_domains": frozenset()}, id="empty-domain-list"),
    ],
)
def test_bad_settings(changes: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        _provider(**changes)


def test_settings_normalised_and_secret_hidden() -> None:
    provider = _provider(
        allowed_email_domains=frozenset({"@Corp.Example"}),
        issuer="http://127.0.0.1:8080",
        redirect_uri="http://127.0.0.1:9/cb",
        allow_insecure_http=True,
    )
    assert provider.allowed_email_domains == frozenset({"corp.example"})
    assert provider.display_name == "127.0.0.1"
    assert CLIENT_SECRET not in repr(provider)
    with pytest.raises(TypeError):
        provider.group_roles["x"] = frozenset()  # type: ignore[index]


def test_insecure_http_warns(idp: FakeIdP, caplog: pytest.LogCaptureFixture) -> None:
    FederatedLogin(
        _provider(issuer="http://127.0.0.1:8080", redirect_uri="http://127.0.0.1:9/cb", allow_insecure_http=True),
        http=idp,
    )
    assert any(r.levelname == "WARNING" and "allow_insecure_http" in r.message for r in caplog.records)


def test_reasons_listed() -> None:
    assert {"state_mismatch", "idp_error", "id_token_nonce_mismatch"} <= federation.REASONS
