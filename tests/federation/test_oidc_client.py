"""The relying-party core (mcp_bastion.oauth.oidc_client): discovery documents, the token request, UserInfo,
and ID token validation per OIDC Core §3.1.3.7, negative space first."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Mapping
from typing import Literal

import orjson
import pytest
from joserfc.jwk import ECKey, OKPKey, RSAKey

from mcp_bastion.oauth import oidc_client
from mcp_bastion.oauth.jwks import KeySet
from mcp_bastion.oauth.oidc_client import (
    REASONS,
    HTTPResponse,
    IDTokenCheck,
    TokenResponse,
    basic_credentials,
    discovery_url,
    exchange_code,
    fetch_userinfo,
    parse_metadata,
    url_problem,
    verify_id_token,
)
from mcp_bastion.oauth.refusal import Refusal
from tests.oauth.support import compact, signer

from .fakes import CLIENT_ID, CLIENT_SECRET, DROP, ISSUER, REDIRECT_URI, FakeIdP, json_response, unsigned

pytestmark = pytest.mark.anyio

NOW = 1_800_000_000.0
NONCE = "n-0S6_WzA2Mj"


@pytest.fixture(scope="module")
def keys() -> dict[str, ECKey | OKPKey | RSAKey]:
    return {
        "ES256": ECKey.generate_key("P-256", parameters={"kid": "ec-1"}, private=True),
        "RS256": RSAKey.generate_key(2048, parameters={"kid": "rsa-1"}, private=True),
        "EdDSA": OKPKey.generate_key("Ed25519", parameters={"kid": "ed-1"}, private=True),
        # Not the IdP's key, but claims the IdP's kid.
        "stranger": ECKey.generate_key("P-256", parameters={"kid": "ec-1"}, private=True),
        "stranger-new-kid": ECKey.generate_key("P-256", parameters={"kid": "ec-2"}, private=True),
    }


@pytest.fixture(scope="module")
def trusted(keys: dict[str, ECKey | OKPKey | RSAKey]) -> KeySet:
    return KeySet(type(keys[a]).import_key(keys[a].as_dict(private=False)) for a in ("ES256", "RS256", "EdDSA"))


def _claims(**changes: object) -> dict[str, object]:
    claims: dict[str, object] = {
        "iss": ISSUER,
        "sub": "248289761001",
        "aud": CLIENT_ID,
        "exp": NOW + 300,
        "iat": NOW - 1,
        "nonce": NONCE,
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not DROP}


def _token(
    keys: dict[str, ECKey | OKPKey | RSAKey], alg: str = "ES256", key: str | None = None, **claims: object
) -> str:
    signing_key = keys[key or alg]
    return compact({"alg": alg, "kid": signing_key.kid}, _claims(**claims), signer(alg, signing_key))


def _hs256_with_public_key(keys: dict[str, ECKey | OKPKey | RSAKey]) -> str:
    # The classic confusion: the verifier's public key used as an HMAC secret.
    secret = orjson.dumps(keys["ES256"].as_dict(private=False))
    return compact({"alg": "HS256", "kid": "ec-1"}, _claims(), lambda m: hmac.new(secret, m, hashlib.sha256).digest())


def _altered(keys: dict[str, ECKey | OKPKey | RSAKey]) -> str:
    head, payload, signature = _token(keys).split(".")
    flipped = bytearray(base64.urlsafe_b64decode(signature + "=="))
    flipped[10] ^= 1
    return f"{head}.{payload}.{base64.urlsafe_b64encode(bytes(flipped)).rstrip(b'=').decode()}"


CHECK = IDTokenCheck(issuer=ISSUER, client_id=CLIENT_ID, nonce=NONCE)

BAD_TOKENS: list[object] = [
    pytest.param(lambda k: unsigned({"alg": "none"}, _claims()), "id_token_alg_forbidden", id="alg-none"),
    pytest.param(lambda k: unsigned({"alg": "None"}, _claims()), "id_token_alg_forbidden", id="alg-None"),
    pytest.param(_hs256_with_public_key, "id_token_alg_forbidden", id="alg-HS256-public-key-as-secret"),
    pytest.param(lambda k: _token(k, "PS256", key="RS256"), "id_token_alg_forbidden", id="alg-not-on-allow-list"),
    pytest.param(
        lambda k: compact({"alg": "RS256", "kid": "ec-1"}, _claims(), signer("RS256", k["RS256"])),
        "id_token_alg_forbidden",
        id="alg-does-not-fit-key",
    ),
    pytest.param(lambda k: _token(k, key="stranger"), "id_token_signature_invalid", id="other-key-same-kid"),
    pytest.param(lambda k: _token(k, key="stranger-new-kid"), "id_token_key_unknown", id="other-key-unknown-kid"),
    pytest.param(_altered, "id_token_signature_invalid", id="signature-altered"),
    pytest.param(
        lambda k: compact({"alg": "ES256"}, _claims(), signer("ES256", k["ES256"])),
        "id_token_key_unknown",
        id="no-kid-several-keys",
    ),
    pytest.param(lambda k: _token(k, iss=ISSUER + "/"), "id_token_issuer_mismatch", id="iss-not-exact"),
    pytest.param(lambda k: _token(k, iss="https://evil.example"), "id_token_issuer_mismatch", id="iss-other"),
    pytest.param(lambda k: _token(k, aud="another-client"), "id_token_audience_mismatch", id="aud-other"),
    pytest.param(lambda k: _token(k, aud=["a", "b"]), "id_token_audience_mismatch", id="aud-list-without-us"),
    pytest.param(lambda k: _token(k, aud=[CLIENT_ID, "other"]), "id_token_azp_mismatch", id="aud-several-no-azp"),
    pytest.param(lambda k: _token(k, aud=[CLIENT_ID, "other"], azp="other"), "id_token_azp_mismatch", id="azp-other"),
    pytest.param(lambda k: _token(k, azp="other"), "id_token_azp_mismatch", id="azp-other-single-aud"),
    pytest.param(lambda k: _token(k, aud=42), "id_token_malformed", id="aud-not-string"),
    pytest.param(lambda k: _token(k, exp=NOW - 61), "id_token_expired", id="expired-beyond-leeway"),
    pytest.param(lambda k: _token(k, iat=NOW + 61), "id_token_not_yet_valid", id="iat-in-future"),
    pytest.param(lambda k: _token(k, nbf=NOW + 61), "id_token_not_yet_valid", id="nbf-in-future"),
    pytest.param(lambda k: _token(k, iat=NOW - 700, exp=NOW + 60), "id_token_too_old", id="iat-too-old"),
    pytest.param(lambda k: _token(k, exp=DROP), "id_token_missing_claim", id="no-exp"),
    pytest.param(lambda k: _token(k, iat=DROP), "id_token_missing_claim", id="no-iat"),
    pytest.param(lambda k: _token(k, exp="soon"), "id_token_malformed", id="exp-string"),
    pytest.param(lambda k: _token(k, exp=True), "id_token_malformed", id="exp-bool"),
    pytest.param(lambda k: _token(k, sub=DROP), "id_token_missing_claim", id="no-sub"),
    pytest.param(lambda k: _token(k, sub=""), "id_token_missing_claim", id="empty-sub"),
    pytest.param(lambda k: _token(k, nonce=DROP), "id_token_missing_claim", id="no-nonce"),
    pytest.param(lambda k: _token(k, nonce="n-other"), "id_token_nonce_mismatch", id="nonce-other"),
    pytest.param(
        lambda k: compact({"alg": "ES256", "kid": "ec-1", "typ": "at+jwt"}, _claims(), signer("ES256", k["ES256"])),
        "id_token_malformed",
        id="typ-access-token",
    ),
    pytest.param(
        lambda k: compact({"alg": "ES256", "kid": "ec-1", "crit": ["exp"]}, _claims(), signer("ES256", k["ES256"])),
        "id_token_malformed",
        id="crit-header",
    ),
    pytest.param(lambda k: "a.b", "id_token_malformed", id="two-segments"),
    pytest.param(lambda k: "a.b.c.d.e", "id_token_malformed", id="jwe-five-segments"),
    pytest.param(lambda k: "e30.e30.!!", "id_token_malformed", id="not-base64url"),
    pytest.param(lambda k: "W10.e30.AA", "id_token_malformed", id="header-not-object"),
    pytest.param(lambda k: "x" * 20_000, "id_token_malformed", id="too-long"),
]


@pytest.mark.parametrize(("make", "reason"), BAD_TOKENS)
async def test_bad_id_tokens_are_refused(
    keys: dict[str, ECKey | OKPKey | RSAKey],
    trusted: KeySet,
    make: Callable[[dict[str, ECKey | OKPKey | RSAKey]], str],
    reason: str,
) -> None:
    with pytest.raises(Refusal) as caught:
        await verify_id_token(make(keys), CHECK, trusted, now=NOW)
    assert caught.value.reason == reason
    assert reason in REASONS
    assert caught.value.error == "access_denied"
    assert NONCE not in caught.value.description


@pytest.mark.parametrize("alg", ["ES256", "RS256", "EdDSA"])
async def test_good_id_token_each_algorithm(
    keys: dict[str, ECKey | OKPKey | RSAKey], trusted: KeySet, alg: str
) -> None:
    claims = await verify_id_token(_token(keys, alg, name="Alice"), CHECK, trusted, now=NOW)
    assert claims["sub"] == "248289761001"
    assert claims["name"] == "Alice"


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"exp": NOW - 59}, id="expired-within-leeway"),
        pytest.param({"iat": NOW + 59}, id="iat-slightly-ahead"),
        pytest.param({"aud": [CLIENT_ID, "other"], "azp": CLIENT_ID}, id="several-audiences-azp-us"),
        pytest.param({"aud": [CLIENT_ID]}, id="aud-array"),
    ],
)
async def test_acceptable_edges(
    keys: dict[str, ECKey | OKPKey | RSAKey], trusted: KeySet, changes: dict[str, object]
) -> None:
    token = compact({"alg": "ES256", "kid": "ec-1"}, _claims(**changes), signer("ES256", keys["ES256"]))
    await verify_id_token(token, CHECK, trusted, now=NOW)


async def test_algorithm_allow_list_narrows(keys: dict[str, ECKey | OKPKey | RSAKey], trusted: KeySet) -> None:
    check = IDTokenCheck(issuer=ISSUER, client_id=CLIENT_ID, nonce=NONCE, algorithms=frozenset({"ES256"}))
    with pytest.raises(Refusal) as caught:
        await verify_id_token(_token(keys, "RS256"), check, trusted, now=NOW)
    assert caught.value.reason == "id_token_alg_forbidden"


# --- discovery ---


def _doc(**changes: object) -> HTTPResponse:
    return json_response(
        {k: v for k, v in {**FakeIdP(key=ECKey.generate_key("P-256")).metadata(), **changes}.items() if v is not DROP}
    )


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        pytest.param(_doc(issuer="https://other.example"), "discovery_issuer_mismatch", id="issuer-other"),
        pytest.param(_doc(issuer=ISSUER + "/"), "discovery_issuer_mismatch", id="issuer-trailing-slash"),
        pytest.param(_doc(issuer=DROP), "discovery_issuer_mismatch", id="issuer-missing"),
        pytest.param(_doc(token_endpoint="http://idp.example/token"), "discovery_invalid", id="http-endpoint"),
        pytest.param(_doc(jwks_uri=DROP), "discovery_invalid", id="no-jwks-uri"),
        pytest.param(_doc(authorization_endpoint=7), "discovery_invalid", id="endpoint-not-string"),
        pytest.param(_doc(response_types_supported=["id_token"]), "discovery_invalid", id="no-code-flow"),
        pytest.param(_doc(code_challenge_methods_supported=["plain"]), "discovery_invalid", id="no-s256"),
        pytest.param(_doc(id_token_signing_alg_values_supported="RS256"), "discovery_invalid", id="algs-not-list"),
        pytest.param(
            _doc(authorization_response_iss_parameter_supported="yes"), "discovery_invalid", id="iss-flag-not-bool"
        ),
        pytest.param(json_response({"issuer": ISSUER}, 404), "discovery_invalid", id="http-404"),
        pytest.param(HTTPResponse(200, "text/html", b"<html>"), "discovery_invalid", id="html"),
        pytest.param(HTTPResponse(200, "application/json", b"[1]"), "discovery_invalid", id="not-object"),
        pytest.param(HTTPResponse(200, "application/json", b"{"), "discovery_invalid", id="not-json"),
    ],
)
def test_bad_discovery_documents(response: HTTPResponse, reason: str) -> None:
    with pytest.raises(Refusal) as caught:
        parse_metadata(response, issuer=ISSUER, allow_insecure_http=False)
    assert caught.value.reason == reason


def test_discovery_defaults_and_optional_members() -> None:
    metadata = parse_metadata(
        _doc(
            userinfo_endpoint=DROP,
            token_endpoint_auth_methods_supported=DROP,
            code_challenge_methods_supported=DROP,
            authorization_response_iss_parameter_supported=DROP,
        ),
        issuer=ISSUER,
        allow_insecure_http=False,
    )
    assert metadata.userinfo_endpoint is None
    assert metadata.token_endpoint_auth_methods == {"client_secret_basic"}
    assert metadata.iss_parameter_supported is False


@pytest.mark.parametrize(
    ("issuer", "url"),
    [
        ("https://idp.example", "https://idp.example/.well-known/openid-configuration"),
        ("https://idp.example/", "https://idp.example/.well-known/openid-configuration"),
        ("https://idp.example/tenant/1", "https://idp.example/tenant/1/.well-known/openid-configuration"),
    ],
)
def test_discovery_url(issuer: str, url: str) -> None:
    assert discovery_url(issuer) == url


@pytest.mark.parametrize(
    ("url", "insecure", "ok"),
    [
        ("https://idp.example/x", False, True),
        ("http://idp.example/x", True, False),
        ("http://127.0.0.1:8080/x", False, False),
        ("http://127.0.0.1:8080/x", True, True),
        ("http://[::1]:8080/x", True, True),
        ("http://localhost:8080/x", True, False),
        ("https://user:pw@idp.example/", False, False),
        ("https://idp.example/#frag", False, False),
        ("https:///nohost", False, False),
        ("ftp://idp.example/", True, False),
    ],
)
def test_url_problem(url: str, insecure: bool, ok: bool) -> None:
    assert (url_problem(url, allow_insecure_http=insecure) is None) is ok


# --- token endpoint and UserInfo ---


def test_basic_credentials_form_encode_both_halves() -> None:
    # RFC 6749 §2.3.1: "s3cret:with/odd+chars" must not be sent raw (its ":" would split it).
    header = basic_credentials("client id", CLIENT_SECRET)
    decoded = base64.b64decode(header.removeprefix("Basic ")).decode()
    assert decoded == "client+id:s3cret%3Awith%2Fodd%2Bchars"


class _Canned:
    def __init__(self, response: HTTPResponse) -> None:
        self.response = response
        self.sent: list[tuple[str, str, dict[str, str], dict[str, str] | None]] = []

    async def request(
        self,
        method: Literal["GET", "POST"],
        url: str,
        *,
        headers: Mapping[str, str],
        form: Mapping[str, str] | None = None,
    ) -> HTTPResponse:
        self.sent.append((method, url, dict(headers), None if form is None else dict(form)))
        return self.response

    async def aclose(self) -> None:
        pass


async def _exchange(response: HTTPResponse, secret: str | None = CLIENT_SECRET) -> tuple[_Canned, TokenResponse]:
    http = _Canned(response)
    result = await exchange_code(
        http,
        f"{ISSUER}/token",
        client_id=CLIENT_ID,
        client_secret=secret,
        code="the-code",
        redirect_uri=REDIRECT_URI,
        code_verifier="v" * 43,
    )
    return http, result


async def test_token_request_confidential_and_public() -> None:
    ok = json_response({"id_token": "x.y.z", "access_token": "at", "token_type": "bearer"})
    http, _ = await _exchange(ok)
    _, _, headers, form = http.sent[0]
    assert headers["Authorization"] == basic_credentials(CLIENT_ID, CLIENT_SECRET)
    assert form == {
        "grant_type": "authorization_code",
        "code": "the-code",
        "redirect_uri": REDIRECT_URI,
        "code_verifier": "v" * 43,
    }
    http, _ = await _exchange(ok, secret=None)
    _, _, headers, form = http.sent[0]
    assert "Authorization" not in headers
    assert form is not None
    assert form["client_id"] == CLIENT_ID


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        pytest.param(json_response({"error": "invalid_grant"}, 400), "token_request_refused", id="invalid-grant"),
        pytest.param(HTTPResponse(500, "text/html", b"oops"), "token_request_refused", id="http-500-html"),
        pytest.param(
            json_response({"access_token": "at", "token_type": "Bearer"}), "token_response_invalid", id="no-id-token"
        ),
        pytest.param(
            json_response({"id_token": "x.y.z", "access_token": "at", "token_type": "DPoP"}),
            "token_response_invalid",
            id="not-bearer",
        ),
        pytest.param(json_response({"id_token": 5}), "token_response_invalid", id="id-token-not-string"),
        pytest.param(HTTPResponse(200, "text/plain", b"{}"), "token_response_invalid", id="not-json-type"),
    ],
)
async def test_token_endpoint_failures(response: HTTPResponse, reason: str) -> None:
    with pytest.raises(Refusal) as caught:
        await _exchange(response)
    assert caught.value.reason == reason
    assert "the-code" not in str(caught.value)
    assert "at" not in caught.value.description.split()


async def test_token_error_body_is_not_echoed() -> None:
    leaky = json_response({"error": "invalid_grant", "echo": "the-code s3cret"}, 400)
    with pytest.raises(Refusal) as caught:
        await _exchange(leaky)
    assert "s3cret" not in str(caught.value)
    assert "invalid_grant" in caught.value.description


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        pytest.param(json_response({"sub": "someone-else"}), "userinfo_subject_mismatch", id="other-sub"),
        pytest.param(json_response({"name": "no sub"}), "userinfo_subject_mismatch", id="no-sub"),
        pytest.param(json_response({"error": "invalid_token"}, 401), "userinfo_failed", id="401"),
        pytest.param(HTTPResponse(200, "application/jwt", b"a.b.c"), "userinfo_failed", id="signed-userinfo"),
    ],
)
async def test_userinfo_failures(response: HTTPResponse, reason: str) -> None:
    http = _Canned(response)
    with pytest.raises(Refusal) as caught:
        await fetch_userinfo(http, f"{ISSUER}/userinfo", "the-access-token", "248289761001")
    assert caught.value.reason == reason
    assert "the-access-token" not in str(caught.value)


async def test_userinfo_sends_bearer() -> None:
    http = _Canned(json_response({"sub": "248289761001", "groups": ["g"]}))
    claims = await fetch_userinfo(http, f"{ISSUER}/userinfo", "at-1", "248289761001")
    assert claims["groups"] == ["g"]
    assert http.sent[0][2]["Authorization"] == "Bearer at-1"


def test_reasons_are_snake_case() -> None:
    assert all(r.replace("_", "").isalpha() and r.islower() for r in oidc_client.REASONS)
