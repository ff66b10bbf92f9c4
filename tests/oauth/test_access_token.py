"""JWT access-token verification (mcp_bastion.oauth.access_token): the negative space first."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import orjson
import pytest
from joserfc.jwk import ECKey, OKPKey, RSAKey

from mcp_bastion.errors import ConfigError, Unauthenticated, Unavailable
from mcp_bastion.oauth import access_token
from mcp_bastion.oauth.access_token import (
    REASONS,
    AccessClaims,
    AccessTokenVerifier,
    RevocationCheck,
    TrustedIssuer,
)
from mcp_bastion.oauth.jwks import KeySet, PublicKey

from .support import FakeClock, b64, compact, signer

NOW = 1_800_000_000.0
AUD = "https://gw.example/mcp"
ISS = "https://issuer.example"
ISS_ES256_ONLY = "https://es256-only.example"
DROP = object()
"""Marks a header member or claim to leave out."""


@dataclass(frozen=True)
class Keys:
    ec: ECKey
    ed: OKPKey
    rsa: RSAKey
    stranger: ECKey
    """Not trusted by anyone, but sends kid "ec-1" to look like the trusted key."""


@pytest.fixture(scope="module")
def keys(ec_key: ECKey, ed_key: OKPKey, rsa_key: RSAKey) -> Keys:
    stranger = ECKey.generate_key("P-256", parameters={"kid": "ec-1"}, private=True)
    return Keys(ec_key, ed_key, rsa_key, stranger)


def make_verifier(
    keys: Keys, clock: FakeClock, *, revocation: RevocationCheck | None = None, cache_size: int = 10_000
) -> AccessTokenVerifier:
    ec = ECKey.import_key(keys.ec.as_dict(private=False))
    ed = OKPKey.import_key(keys.ed.as_dict(private=False))
    rsa = RSAKey.import_key(keys.rsa.as_dict(private=False))
    return AccessTokenVerifier(
        [
            TrustedIssuer(ISS, KeySet([ec, ed, rsa])),
            TrustedIssuer(ISS_ES256_ONLY, KeySet([ec, rsa]), algorithms=frozenset({"ES256"})),
        ],
        clock=clock,
        revocation=revocation,
        cache_size=cache_size,
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def verifier(keys: Keys, clock: FakeClock) -> AccessTokenVerifier:
    return make_verifier(keys, clock)


def _merge(base: dict[str, object], changes: Mapping[str, object]) -> dict[str, object]:
    merged = {**base, **changes}
    return {name: value for name, value in merged.items() if value is not DROP}


@dataclass(frozen=True)
class Case:
    """One token: changes to a valid header and claim set, who signs, and damage done afterwards."""

    header: Mapping[str, object] = field(default_factory=dict)
    claims: Mapping[str, object] = field(default_factory=dict)
    signed_by: str = "ec"
    """ec / ed / rsa / stranger (ES256), hs256-pem / hs256-jwk (the public key as HMAC secret), none."""
    damage: Callable[[str], str] | None = None

    def token(self, keys: Keys) -> str:
        alg, kid, sign = {
            "ec": ("ES256", "ec-1", signer("ES256", keys.ec)),
            "ed": ("EdDSA", "ed-1", signer("EdDSA", keys.ed)),
            "rsa": ("RS256", "rsa-1", signer("RS256", keys.rsa)),
            "stranger": ("ES256", "ec-1", signer("ES256", keys.stranger)),
            "hs256-pem": ("HS256", "ec-1", _hmac(keys.ec.as_pem(private=False))),
            "hs256-jwk": ("HS256", "ec-1", _hmac(orjson.dumps(keys.ec.as_dict(private=False)))),
            "none": ("none", "ec-1", lambda _: b""),
        }[self.signed_by]
        header = _merge({"alg": alg, "typ": "at+jwt", "kid": kid}, self.header)
        claims = _merge(
            {
                "iss": ISS,
                "sub": "alice",
                "aud": AUD,
                "exp": NOW + 300,
                "iat": NOW,
                "nbf": NOW,
                "jti": "jti-1",
                "client_id": "demo",
                "scope": "tools:call files:read",
            },
            self.claims,
        )
        token = compact(header, claims, sign)
        return self.damage(token) if self.damage else token


def _hmac(secret: bytes) -> Callable[[bytes], bytes]:
    return lambda message: hmac.new(secret, message, hashlib.sha256).digest()


def _replace_payload(token: str) -> str:
    header, _, signature = token.split(".")
    forged = b64(orjson.dumps({"iss": ISS, "sub": "mallory", "aud": AUD, "exp": NOW + 300}))
    return f"{header}.{forged}.{signature}"


def _swap_header(token: str, header: bytes) -> str:
    return f"{b64(header)}.{token.split('.', 1)[1]}"


def _flip_signature(token: str) -> str:
    head, _, signature = token.rpartition(".")
    return f"{head}.{'B' if signature[0] == 'A' else 'A'}{signature[1:]}"


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(Case(), id="es256"),
        pytest.param(Case(signed_by="ed"), id="eddsa"),
        pytest.param(Case(signed_by="rsa"), id="rs256"),
        pytest.param(Case(claims={"aud": ["https://other.example", AUD]}), id="audience-list-containing-ours"),
        pytest.param(Case(header={"typ": "application/at+jwt"}), id="typ-with-application-prefix"),
        pytest.param(Case(header={"typ": "AT+JWT"}), id="typ-case-insensitive"),
        pytest.param(Case(claims={"exp": NOW - 29}), id="expired-within-leeway"),
        pytest.param(Case(claims={"nbf": NOW + 30, "iat": NOW + 30}), id="nbf-iat-within-leeway"),
        pytest.param(Case(claims={"nbf": DROP, "iat": DROP, "jti": DROP, "client_id": DROP}), id="minimal-claims"),
        pytest.param(Case(claims={"scope": ["a", "b"]}), id="scope-as-array"),
        pytest.param(Case(header={"jku": "https://evil.example/jwks", "x5t": "abc"}), id="ignored-headers"),
        pytest.param(Case(claims={"exp": NOW + 300.5}), id="fractional-exp"),
    ],
)
@pytest.mark.anyio
async def test_valid_tokens_accepted(case: Case, keys: Keys, verifier: AccessTokenVerifier) -> None:
    claims = await verifier.verify(case.token(keys), audience=AUD)
    assert claims.issuer == ISS
    assert claims.subject == "alice"
    assert AUD in claims.audience


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        # time
        pytest.param(Case(claims={"exp": NOW - 30}), "token_expired", id="expired-at-leeway-edge"),
        pytest.param(Case(claims={"exp": NOW - 3600}), "token_expired", id="expired"),
        pytest.param(Case(claims={"nbf": NOW + 31}), "token_not_yet_valid", id="nbf-in-future"),
        pytest.param(Case(claims={"iat": NOW + 31}), "token_not_yet_valid", id="iat-in-future"),
        # audience (RFC 8707): exact strings only
        pytest.param(Case(claims={"aud": "https://other.example/mcp"}), "token_audience_mismatch", id="wrong-aud"),
        pytest.param(Case(claims={"aud": AUD + "/"}), "token_audience_mismatch", id="aud-trailing-slash"),
        pytest.param(Case(claims={"aud": "HTTPS://GW.EXAMPLE/mcp"}), "token_audience_mismatch", id="aud-case-differs"),
        pytest.param(Case(claims={"aud": "https://gw.example:443/mcp"}), "token_audience_mismatch", id="aud-port"),
        pytest.param(Case(claims={"aud": [AUD + "x", "b"]}), "token_audience_mismatch", id="aud-list-without"),
        # issuer and keys
        pytest.param(Case(signed_by="stranger"), "token_signature_invalid", id="trusted-iss-foreign-key"),
        pytest.param(Case(claims={"iss": "https://evil.example"}), "token_issuer_unknown", id="unknown-iss"),
        pytest.param(Case(claims={"iss": ISS + "/"}), "token_issuer_unknown", id="iss-trailing-slash"),
        pytest.param(Case(claims={"iss": 42}), "token_issuer_unknown", id="iss-not-string"),
        pytest.param(Case(header={"kid": "nope"}), "token_key_unknown", id="unknown-kid"),
        pytest.param(Case(header={"kid": DROP}), "token_key_unknown", id="no-kid-several-keys"),
        pytest.param(
            Case(signed_by="stranger", header={"jwk": dict(ECKey.generate_key("P-256").as_dict())}),
            "token_signature_invalid",
            id="embedded-jwk-ignored",
        ),
        pytest.param(
            Case(signed_by="stranger", header={"jku": "https://evil.example/jwks.json"}),
            "token_signature_invalid",
            id="jku-ignored",
        ),
        # algorithms
        pytest.param(Case(signed_by="none"), "token_alg_forbidden", id="alg-none"),
        pytest.param(Case(signed_by="none", header={"alg": "None"}), "token_alg_forbidden", id="alg-None"),
        pytest.param(Case(signed_by="hs256-pem"), "token_alg_forbidden", id="hs256-public-pem-as-secret"),
        pytest.param(Case(signed_by="hs256-jwk"), "token_alg_forbidden", id="hs256-public-jwk-as-secret"),
        pytest.param(
            Case(signed_by="rsa", claims={"iss": ISS_ES256_ONLY}), "token_alg_forbidden", id="rs256-for-es256-issuer"
        ),
        pytest.param(Case(signed_by="rsa", header={"kid": "ec-1"}), "token_alg_forbidden", id="rs256-with-ec-key"),
        pytest.param(Case(header={"kid": "rsa-1"}), "token_alg_forbidden", id="es256-with-rsa-key"),
        pytest.param(Case(header={"kid": "ed-1"}), "token_alg_forbidden", id="es256-with-okp-key"),
        pytest.param(Case(header={"alg": "Ed25519"}, signed_by="ed"), "token_alg_forbidden", id="alg-not-listed"),
        pytest.param(Case(header={"alg": "ES384"}), "token_alg_forbidden", id="es384"),
        # integrity
        pytest.param(Case(damage=_replace_payload), "token_signature_invalid", id="tampered-payload"),
        pytest.param(Case(damage=_flip_signature), "token_signature_invalid", id="tampered-signature"),
        pytest.param(
            Case(damage=lambda t: t.rpartition(".")[0] + ".AAAA"), "token_signature_invalid", id="short-signature"
        ),
        # claims and type (after the signature)
        pytest.param(Case(claims={"exp": DROP}), "token_missing_claim", id="missing-exp"),
        pytest.param(Case(claims={"sub": DROP}), "token_missing_claim", id="missing-sub"),
        pytest.param(Case(claims={"sub": ""}), "token_missing_claim", id="empty-sub"),
        pytest.param(Case(claims={"aud": DROP}), "token_missing_claim", id="missing-aud"),
        pytest.param(Case(claims={"iss": DROP}), "token_missing_claim", id="missing-iss"),
        pytest.param(Case(header={"typ": "JWT"}), "token_type_invalid", id="typ-jwt"),
        pytest.param(Case(header={"typ": DROP}), "token_type_invalid", id="typ-missing"),
        pytest.param(Case(header={"typ": "at+jwt; x=1"}), "token_type_invalid", id="typ-with-parameter"),
        # malformed
        pytest.param(Case(claims={"exp": str(NOW + 300)}), "token_malformed", id="exp-string"),
        pytest.param(Case(claims={"exp": True}), "token_malformed", id="exp-bool"),
        pytest.param(Case(claims={"aud": []}), "token_malformed", id="aud-empty-list"),
        pytest.param(Case(claims={"aud": [AUD, 1]}), "token_malformed", id="aud-list-non-string"),
        pytest.param(Case(claims={"scope": 7}), "token_malformed", id="scope-number"),
        pytest.param(Case(claims={"sub": {"id": 1}}), "token_malformed", id="sub-object"),
        pytest.param(Case(header={"crit": ["exp"], "exp": 1}), "token_malformed", id="crit-header"),
        pytest.param(Case(header={"b64": False}), "token_malformed", id="b64-header"),
        pytest.param(Case(header={"alg": DROP}), "token_malformed", id="no-alg"),
        pytest.param(Case(header={"kid": 1}), "token_malformed", id="kid-not-string"),
        pytest.param(Case(damage=lambda t: t + ".x"), "token_malformed", id="four-segments"),
        pytest.param(Case(damage=lambda t: t.rpartition(".")[0]), "token_malformed", id="two-segments"),
        pytest.param(Case(damage=lambda t: t.rpartition(".")[0] + "."), "token_malformed", id="empty-signature"),
        pytest.param(Case(damage=lambda t: t.replace(".", "..", 1)), "token_malformed", id="empty-segment"),
        pytest.param(Case(damage=lambda t: "e" + t), "token_malformed", id="header-bad-base64"),
        pytest.param(Case(damage=lambda t: t + "="), "token_malformed", id="padded-signature"),
        pytest.param(Case(damage=lambda t: t[:10] + "+" + t[11:]), "token_malformed", id="non-url-alphabet"),
        pytest.param(Case(damage=lambda t: t + "é"), "token_malformed", id="non-ascii"),
        pytest.param(Case(damage=lambda t: t + "A" * 20_000), "token_malformed", id="too-long"),
        pytest.param(Case(damage=lambda t: _swap_header(t, b"not json")), "token_malformed", id="header-not-json"),
        pytest.param(Case(damage=lambda t: _swap_header(t, b"[1]")), "token_malformed", id="header-array"),
        pytest.param(
            Case(damage=lambda t: f"{t.split('.')[0]}.{b64(b'null')}.{t.split('.')[2]}"),
            "token_malformed",
            id="payload-null",
        ),
    ],
)
@pytest.mark.anyio
async def test_invalid_tokens_refused(case: Case, reason: str, keys: Keys, verifier: AccessTokenVerifier) -> None:
    assert reason in REASONS
    with pytest.raises(Unauthenticated) as caught:
        await verifier.verify(case.token(keys), audience=AUD)
    assert caught.value.reason == reason
    assert caught.value.error == "invalid_token"


@pytest.mark.anyio
async def test_non_canonical_base64_refused(keys: Keys, verifier: AccessTokenVerifier) -> None:
    header, payload, signature = Case().token(keys).split(".")
    # An ES256 signature is 64 bytes: 86 characters whose last one carries 4 unused bits.
    last = signature[-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = alphabet[alphabet.index(last) ^ 1]
    with pytest.raises(Unauthenticated) as caught:
        await verifier.verify(f"{header}.{payload}.{signature[:-1]}{twin}", audience=AUD)
    assert caught.value.reason == "token_malformed"


@pytest.mark.anyio
async def test_claims_are_complete_and_immutable(keys: Keys, verifier: AccessTokenVerifier) -> None:
    token = Case(claims={"aud": [AUD, "b"], "ext": {"groups": ["x"]}}).token(keys)
    claims = await verifier.verify(token, audience=AUD)
    assert claims == AccessClaims(
        issuer=ISS,
        subject="alice",
        audience=(AUD, "b"),
        expires_at=NOW + 300,
        issued_at=NOW,
        not_before=NOW,
        jwt_id="jti-1",
        client_id="demo",
        scope=frozenset({"tools:call", "files:read"}),
        raw=claims.raw,
    )
    assert isinstance(claims.raw, MappingProxyType)
    with pytest.raises(TypeError):
        claims.raw["sub"] = "mallory"  # type: ignore[index]
    ext = claims.raw["ext"]
    assert isinstance(ext, Mapping)
    assert ext["groups"] == ("x",)


class Revocations:
    """An in-memory revocation store that counts its calls and can be told to fail."""

    def __init__(self) -> None:
        self.revoked: set[str] = set()
        self.calls = 0
        self.fail = False

    async def is_revoked(self, claims: AccessClaims) -> bool:
        self.calls += 1
        if self.fail:
            raise ConnectionError("store down")
        return claims.jwt_id in self.revoked


@pytest.mark.anyio
async def test_revoked_token_refused(keys: Keys, clock: FakeClock) -> None:
    store = Revocations()
    verifier = make_verifier(keys, clock, revocation=store)
    token = Case().token(keys)
    await verifier.verify(token, audience=AUD)
    store.revoked.add("jti-1")
    with pytest.raises(Unauthenticated) as caught:
        await verifier.verify(token, audience=AUD)
    assert caught.value.reason == "token_revoked"


@pytest.mark.anyio
async def test_revocation_store_failure_fails_closed(keys: Keys, clock: FakeClock) -> None:
    store = Revocations()
    verifier = make_verifier(keys, clock, revocation=store)
    token = Case().token(keys)
    await verifier.verify(token, audience=AUD)  # now cached
    store.fail = True
    with pytest.raises(Unavailable):
        await verifier.verify(token, audience=AUD)
    store.fail = False
    assert (await verifier.verify(token, audience=AUD)).subject == "alice"


@pytest.mark.anyio
async def test_unclear_revocation_answer_denies(keys: Keys, clock: FakeClock) -> None:
    class Confused:
        async def is_revoked(self, claims: AccessClaims) -> bool:
            return None  # type: ignore[return-value]

    verifier = make_verifier(keys, clock, revocation=Confused())
    with pytest.raises(Unauthenticated) as caught:
        await verifier.verify(Case().token(keys), audience=AUD)
    assert caught.value.reason == "token_revoked"


@pytest.fixture
def signature_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records the algorithm of every signature verification the verifier performs."""
    calls: list[str] = []
    real = access_token._verify_signature

    def spy(alg: str, key: PublicKey, signing_input: bytes, signature: bytes) -> bool:
        calls.append(alg)
        return real(alg, key, signing_input, signature)

    monkeypatch.setattr(access_token, "_verify_signature", spy)
    return calls


@pytest.mark.anyio
async def test_cache_skips_signature_but_not_expiry(keys: Keys, clock: FakeClock, signature_checks: list[str]) -> None:
    verifier = make_verifier(keys, clock)
    token = Case().token(keys)
    await verifier.verify(token, audience=AUD)
    await verifier.verify(token, audience=AUD)
    assert signature_checks == ["ES256"]
    clock.now = NOW + 300 + 30  # exp plus leeway
    with pytest.raises(Unauthenticated) as caught:
        await verifier.verify(token, audience=AUD)
    assert caught.value.reason == "token_expired"
    clock.now = NOW  # a clock stepping back must not bring the evicted entry back without a fresh check
    await verifier.verify(token, audience=AUD)
    assert signature_checks == ["ES256", "ES256"]


@pytest.mark.anyio
async def test_cache_keeps_checking_audience(keys: Keys, clock: FakeClock, signature_checks: list[str]) -> None:
    verifier = make_verifier(keys, clock)
    token = Case().token(keys)
    await verifier.verify(token, audience=AUD)
    for _ in range(2):
        with pytest.raises(Unauthenticated) as caught:
            await verifier.verify(token, audience="https://gw.example/other")
        assert caught.value.reason == "token_audience_mismatch"
    assert signature_checks == ["ES256"]


@pytest.mark.anyio
async def test_cache_keeps_checking_not_before(keys: Keys, clock: FakeClock, signature_checks: list[str]) -> None:
    verifier = make_verifier(keys, clock)
    token = Case().token(keys)
    await verifier.verify(token, audience=AUD)
    clock.now = NOW - 31  # an injected clock may step back; nbf is re-checked on the cached entry
    with pytest.raises(Unauthenticated) as caught:
        await verifier.verify(token, audience=AUD)
    assert caught.value.reason == "token_not_yet_valid"
    assert signature_checks == ["ES256"]


@pytest.mark.anyio
async def test_cache_asks_revocation_every_time(keys: Keys, clock: FakeClock, signature_checks: list[str]) -> None:
    store = Revocations()
    verifier = make_verifier(keys, clock, revocation=store)
    token = Case().token(keys)
    for _ in range(3):
        await verifier.verify(token, audience=AUD)
    assert store.calls == 3
    assert signature_checks == ["ES256"]


@pytest.mark.anyio
async def test_cache_is_bounded(keys: Keys, clock: FakeClock, signature_checks: list[str]) -> None:
    verifier = make_verifier(keys, clock, cache_size=2)
    tokens = [Case(claims={"jti": f"j{n}"}).token(keys) for n in range(3)]
    for token in tokens:
        await verifier.verify(token, audience=AUD)
    await verifier.verify(tokens[2], audience=AUD)  # still cached
    assert len(signature_checks) == 3
    await verifier.verify(tokens[0], audience=AUD)  # evicted as least recently used
    assert len(signature_checks) == 4


@pytest.mark.anyio
async def test_failed_tokens_are_not_cached(keys: Keys, clock: FakeClock, signature_checks: list[str]) -> None:
    verifier = make_verifier(keys, clock)
    token = Case(header={"typ": "JWT"}).token(keys)
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            await verifier.verify(token, audience=AUD)
    assert signature_checks == ["ES256", "ES256"]


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda ks: TrustedIssuer(ISS, ks, algorithms=frozenset({"HS256"})), id="hs256-allowed"),
        pytest.param(lambda ks: TrustedIssuer(ISS, ks, algorithms=frozenset({"none"})), id="none-allowed"),
        pytest.param(lambda ks: TrustedIssuer(ISS, ks, algorithms=frozenset()), id="no-algorithms"),
        pytest.param(lambda ks: TrustedIssuer(ISS, ks, accepted_typ=frozenset()), id="no-typ"),
        pytest.param(lambda ks: TrustedIssuer("", ks), id="empty-issuer"),
        pytest.param(
            lambda ks: AccessTokenVerifier([TrustedIssuer(ISS, ks), TrustedIssuer(ISS, ks)]), id="issuer-twice"
        ),
        pytest.param(lambda ks: AccessTokenVerifier([TrustedIssuer(ISS, ks)], leeway_seconds=-1), id="negative-leeway"),
        pytest.param(lambda ks: AccessTokenVerifier([TrustedIssuer(ISS, ks)], cache_size=-1), id="negative-cache"),
    ],
)
def test_bad_configuration_refused(build: Callable[[KeySet], object], keys: Keys) -> None:
    with pytest.raises(ConfigError):
        build(KeySet([ECKey.import_key(keys.ec.as_dict())]))


@pytest.mark.anyio
async def test_empty_audience_is_a_programming_error(keys: Keys, verifier: AccessTokenVerifier) -> None:
    with pytest.raises(ValueError, match="audience"):
        await verifier.verify(Case().token(keys), audience="")
