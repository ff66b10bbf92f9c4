"""Client authentication at the token endpoint (RFC 6749 §2.3, RFC 7523 §2.2/§3): one method per request,
the registered one, constant-time secrets, and private_key_jwt assertions checked after their signature."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from typing import Any

import pytest
from joserfc.jwk import ECKey, RSAKey

from mcp_bastion.oauth.clientauth import ASSERTION_TYPE, RegisteredClientKeys, authenticate_client
from mcp_bastion.oauth.jwks import KeySet, KeySource, PublicKey
from mcp_bastion.oauth.memstore import MemoryOAuthStore
from mcp_bastion.oauth.refusal import Refusal
from mcp_bastion.oauth.store import ClientRecord
from tests.oauth.asworld import basic
from tests.oauth.support import compact, public, signer

NOW = 1_800_000_000.0
TOKEN_URL = "https://as.example/oauth/token"
AUDIENCES = frozenset({TOKEN_URL, "https://as.example"})
SECRET = "s3cret:with/odd+chars é"
CLIENT_KEY = ECKey.generate_key("P-256", parameters={"kid": "k1"}, private=True)
OTHER_KEY = ECKey.generate_key("P-256", parameters={"kid": "k1"}, private=True)


def _client(client_id: str, method: str, **metadata: Any) -> ClientRecord:
    secret_hash = hashlib.sha256(SECRET.encode()).digest() if method.startswith("client_secret") else None
    return ClientRecord(
        client_id=client_id,
        kind="registered",
        metadata={"token_endpoint_auth_method": method, "grant_types": ["authorization_code"], **metadata},
        secret_hash=secret_hash,
        created_at=NOW,
    )


CLIENTS = {
    record.client_id: record
    for record in (
        _client("public", "none"),
        _client("basic", "client_secret_basic"),
        _client("post", "client_secret_post"),
        _client("jwt", "private_key_jwt", jwks={"keys": [public(CLIENT_KEY)]}),
    )
}


async def _lookup(client_id: str) -> ClientRecord | None:
    return CLIENTS.get(client_id)


async def _auth(
    form: Mapping[str, str], authorization: str | None = None, store: MemoryOAuthStore | None = None
) -> ClientRecord:
    return await authenticate_client(
        form,
        authorization,
        lookup=_lookup,
        store=store or MemoryOAuthStore(),
        keys=RegisteredClientKeys(),
        audiences=AUDIENCES,
        now=NOW,
    )


def assertion(
    claims_changes: Mapping[str, object] | None = None,
    *,
    key: ECKey | RSAKey = CLIENT_KEY,
    header: Mapping[str, object] | None = None,
    alg: str = "ES256",
) -> str:
    claims: dict[str, object] = {
        "iss": "jwt",
        "sub": "jwt",
        "aud": TOKEN_URL,
        "exp": NOW + 60,
        "iat": NOW,
        "jti": "jti-1",
    }
    claims.update(claims_changes or {})
    claims = {name: value for name, value in claims.items() if value is not None}
    return compact(header or {"alg": alg, "kid": "k1"}, claims, signer(alg, key))


def jwt_form(token: str, **extra: str) -> dict[str, str]:
    return {"client_assertion_type": ASSERTION_TYPE, "client_assertion": token, **extra}


@pytest.mark.parametrize(
    ("form", "authorization", "client_id"),
    [
        pytest.param({"client_id": "public"}, None, "public", id="none"),
        pytest.param({}, basic("basic", SECRET), "basic", id="basic"),
        pytest.param({"client_id": "basic"}, basic("basic", SECRET), "basic", id="basic-with-same-form-id"),
        pytest.param({"client_id": "post", "client_secret": SECRET}, None, "post", id="post"),
        pytest.param(jwt_form(assertion()), None, "jwt", id="private-key-jwt"),
        pytest.param(jwt_form(assertion(), client_id="jwt"), None, "jwt", id="private-key-jwt-with-client-id"),
        pytest.param(jwt_form(assertion({"aud": "https://as.example"})), None, "jwt", id="jwt-aud-issuer"),
        pytest.param(jwt_form(assertion({"aud": ["x", TOKEN_URL]})), None, "jwt", id="jwt-aud-array"),
    ],
)
@pytest.mark.anyio
async def test_authenticated(form: dict[str, str], authorization: str | None, client_id: str) -> None:
    assert (await _auth(form, authorization)).client_id == client_id


def _raw_basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    ("form", "authorization", "error", "reason"),
    [
        pytest.param({}, None, "invalid_client", "client_id_missing", id="nothing"),
        pytest.param({"client_id": "nobody"}, None, "invalid_client", "client_unknown", id="unknown-public"),
        pytest.param({}, basic("nobody", SECRET), "invalid_client", "client_unknown", id="unknown-basic"),
        pytest.param({}, basic("basic", "wrong"), "invalid_client", "client_secret_invalid", id="wrong-secret"),
        pytest.param({}, basic("basic", ""), "invalid_client", "client_secret_invalid", id="empty-secret"),
        pytest.param({}, basic("basic", SECRET[:-1]), "invalid_client", "client_secret_invalid", id="secret-prefix"),
        # Impersonation: a confidential client's id presented as if it were public.
        pytest.param(
            {"client_id": "basic"},
            None,
            "invalid_client",
            "client_auth_method_mismatch",
            id="confidential-id-without-secret",
        ),
        pytest.param(
            {"client_id": "jwt"},
            None,
            "invalid_client",
            "client_auth_method_mismatch",
            id="jwt-client-without-assertion",
        ),
        pytest.param(
            {"client_id": "post", "client_secret": SECRET},
            basic("post", SECRET),
            "invalid_request",
            "client_auth_multiple",
            id="two-methods",
        ),
        pytest.param(
            {"client_id": "basic", "client_secret": SECRET},
            None,
            "invalid_client",
            "client_auth_method_mismatch",
            id="basic-client-via-post",
        ),
        pytest.param(
            {}, basic("post", SECRET), "invalid_client", "client_auth_method_mismatch", id="post-client-via-basic"
        ),
        pytest.param(
            {"client_id": "public", "client_secret": "x"},
            None,
            "invalid_client",
            "client_auth_method_mismatch",
            id="public-client-with-secret",
        ),
        pytest.param(
            {"client_id": "post"},
            basic("basic", SECRET),
            "invalid_client",
            "client_id_mismatch",
            id="form-id-differs-from-basic",
        ),
        pytest.param({}, "Bearer abc", "invalid_client", "client_auth_scheme", id="bearer-header"),
        pytest.param({}, "Basic !!!", "invalid_client", "client_auth_malformed", id="basic-not-base64"),
        pytest.param({}, _raw_basic("no-colon"), "invalid_client", "client_auth_malformed", id="basic-no-colon"),
        pytest.param({}, _raw_basic(":secret"), "invalid_client", "client_auth_malformed", id="basic-empty-id"),
        pytest.param(
            {"client_id": "public", "client_assertion": "x"},
            None,
            "invalid_client",
            "assertion_type_invalid",
            id="assertion-without-type",
        ),
    ],
)
@pytest.mark.anyio
async def test_refused(form: dict[str, str], authorization: str | None, error: str, reason: str) -> None:
    with pytest.raises(Refusal) as caught:
        await _auth(form, authorization)
    assert (caught.value.error, caught.value.reason) == (error, reason)
    assert caught.value.status == (401 if error == "invalid_client" else 400)


RSA_KEY = RSAKey.generate_key(2048, parameters={"kid": "k1"}, private=True)


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        pytest.param(assertion(key=OTHER_KEY), "assertion_signature_invalid", id="signed-by-another-key"),
        pytest.param(assertion(header={"alg": "ES256", "kid": "k2"}), "assertion_key_unknown", id="unknown-kid"),
        pytest.param(assertion(header={"alg": "none", "kid": "k1"}), "assertion_alg_forbidden", id="alg-none"),
        pytest.param(assertion(header={"alg": "HS256", "kid": "k1"}), "assertion_alg_forbidden", id="alg-hs256"),
        pytest.param(assertion(key=RSA_KEY, alg="RS256"), "assertion_signature_invalid", id="rsa-alg-for-ec-key"),
        pytest.param(assertion({"aud": "https://evil.example/token"}), "assertion_audience_invalid", id="wrong-aud"),
        pytest.param(assertion({"aud": None}), "assertion_audience_invalid", id="no-aud"),
        pytest.param(assertion({"exp": NOW - 31}), "assertion_expired", id="expired"),
        pytest.param(assertion({"exp": None}), "assertion_expired", id="no-exp"),
        pytest.param(assertion({"exp": NOW + 3600}), "assertion_lifetime_too_long", id="long-lived"),
        pytest.param(assertion({"iat": NOW + 120}), "assertion_not_yet_valid", id="issued-in-future"),
        pytest.param(assertion({"nbf": NOW + 120}), "assertion_not_yet_valid", id="not-before-future"),
        pytest.param(assertion({"jti": None}), "assertion_jti_missing", id="no-jti"),
        pytest.param(assertion({"iss": "someone-else"}), "assertion_issuer_invalid", id="iss-not-client"),
        pytest.param(
            assertion({"sub": "basic", "iss": "basic"}), "client_auth_method_mismatch", id="sub-names-secret-client"
        ),
        pytest.param(assertion({"sub": "nobody"}), "client_unknown", id="sub-unknown"),
        pytest.param(assertion({"exp": "soon"}), "assertion_malformed", id="exp-not-number"),
        pytest.param("a.b", "assertion_malformed", id="two-segments"),
        pytest.param("e30.e30.", "assertion_alg_forbidden", id="no-alg"),
        pytest.param("!!.!!.!!", "assertion_malformed", id="not-base64"),
    ],
)
@pytest.mark.anyio
async def test_assertion_refused(token: str, reason: str) -> None:
    with pytest.raises(Refusal) as caught:
        await _auth(jwt_form(token))
    assert (caught.value.error, caught.value.reason, caught.value.status) == ("invalid_client", reason, 401)


@pytest.mark.anyio
async def test_assertion_jti_single_use() -> None:
    store = MemoryOAuthStore()
    token = assertion()
    assert (await _auth(jwt_form(token), store=store)).client_id == "jwt"
    with pytest.raises(Refusal) as caught:
        await _auth(jwt_form(token), store=store)
    assert caught.value.reason == "assertion_replayed"
    # A fresh jti is fine.
    assert (await _auth(jwt_form(assertion({"jti": "jti-2"})), store=store)).client_id == "jwt"


@pytest.mark.anyio
async def test_assertion_client_id_must_match_sub() -> None:
    with pytest.raises(Refusal) as caught:
        await _auth(jwt_form(assertion(), client_id="public"))
    assert caught.value.reason == "client_id_mismatch"


@pytest.mark.anyio
async def test_store_failure_propagates() -> None:
    store = MemoryOAuthStore()
    store.fail = RuntimeError("database down")
    with pytest.raises(RuntimeError):
        await _auth(jwt_form(assertion()), store=store)


class _CountingSource:
    def __init__(self) -> None:
        self.keys = KeySet.from_jwks({"keys": [public(CLIENT_KEY)]})

    async def key_for(self, kid: str | None) -> PublicKey | None:
        return self.keys.get(kid)


@pytest.mark.anyio
async def test_jwks_uri_keys_fetched_once_per_url() -> None:
    created: list[str] = []

    def remote(url: str) -> KeySource:
        created.append(url)
        return _CountingSource()

    keys = RegisteredClientKeys(remote=remote)
    client = _client("remote", "private_key_jwt", jwks_uri="https://app.example/jwks.json")
    lookup_table = {"remote": client}

    async def lookup(client_id: str) -> ClientRecord | None:
        return lookup_table.get(client_id)

    for jti in ("a", "b"):
        token = assertion({"iss": "remote", "sub": "remote", "jti": jti})
        authenticated = await authenticate_client(
            jwt_form(token), None, lookup=lookup, store=MemoryOAuthStore(), keys=keys, audiences=AUDIENCES, now=NOW
        )
        assert authenticated.client_id == "remote"
    assert created == ["https://app.example/jwks.json"]
    await keys.aclose()
