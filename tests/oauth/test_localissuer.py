"""The local ES256 issuer (mcp_bastion.oauth.localissuer): its key file and the tokens it mints."""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from mcp_bastion.errors import ConfigError
from mcp_bastion.oauth.access_token import AccessTokenVerifier, TrustedIssuer
from mcp_bastion.oauth.localissuer import LocalIssuer

from .support import FakeClock

ISS = "https://gw.example/oauth"
AUD = "https://gw.example/mcp"
NOW = 1_800_000_000.0


@pytest.fixture
def wide_umask() -> Iterator[None]:
    """Creation must not depend on a careful umask."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.usefixtures("wide_umask")
def test_key_file_created_private(tmp_path: Path) -> None:
    path = tmp_path / "state" / "issuer.jwk"
    issuer = LocalIssuer.load_or_create(path, ISS)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["issuer.jwk"]  # no temporary file left behind
    stored = orjson.loads(path.read_bytes())
    assert stored["kty"] == "EC"
    assert stored["crv"] == "P-256"
    assert "d" in stored
    assert stored["kid"] == issuer.kid


def test_reload_keeps_the_key(tmp_path: Path) -> None:
    path = tmp_path / "issuer.jwk"
    first = LocalIssuer.load_or_create(path, ISS)
    second = LocalIssuer.load_or_create(path, ISS)
    assert first.kid == second.kid
    assert first.public_keys().as_jwks() == second.public_keys().as_jwks()


@pytest.mark.parametrize(
    "mode",
    [
        pytest.param(0o640, id="group-readable"),
        pytest.param(0o604, id="world-readable"),
        pytest.param(0o620, id="group-writable"),
        pytest.param(0o666, id="everyone"),
    ],
)
def test_loose_permissions_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "issuer.jwk"
    LocalIssuer.load_or_create(path, ISS)
    path.chmod(mode)
    with pytest.raises(ConfigError):
        LocalIssuer.load_or_create(path, ISS)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"not json", id="not-json"),
        pytest.param(b'{"kty": "oct", "k": "c2VjcmV0"}', id="not-ec"),
        pytest.param(None, id="public-key-only"),
    ],
)
def test_bad_key_file_refused(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "issuer.jwk"
    if content is None:
        content = orjson.dumps(
            LocalIssuer.load_or_create(tmp_path / "other.jwk", ISS).public_keys().as_jwks()["keys"][0]
        )
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(ConfigError):
        LocalIssuer.load_or_create(path, ISS)


def test_symlinked_key_file_refused(tmp_path: Path) -> None:
    target = tmp_path / "real.jwk"
    LocalIssuer.load_or_create(target, ISS)
    link = tmp_path / "issuer.jwk"
    link.symlink_to(target)
    with pytest.raises(ConfigError):
        LocalIssuer.load_or_create(link, ISS)
    dangling = tmp_path / "dangling.jwk"
    dangling.symlink_to(tmp_path / "nowhere.jwk")
    with pytest.raises(ConfigError):
        LocalIssuer.load_or_create(dangling, ISS)
    assert not (tmp_path / "nowhere.jwk").exists()


def test_public_keys_hold_no_private_material(tmp_path: Path) -> None:
    issuer = LocalIssuer.load_or_create(tmp_path / "issuer.jwk", ISS)
    (jwk,) = issuer.public_keys().as_jwks()["keys"]
    assert set(jwk) == {"kty", "crv", "x", "y", "kid"}


@pytest.mark.anyio
async def test_minted_token_is_rfc9068(tmp_path: Path) -> None:
    issuer = LocalIssuer.load_or_create(tmp_path / "issuer.jwk", ISS)
    token = issuer.mint(
        "alice", AUD, scope=["tools:call", "files:read", "tools:call"], lifetime=600, client_id="cli", now=NOW
    )
    header = orjson.loads(_segment(token, 0))
    assert header == {"alg": "ES256", "typ": "at+jwt", "kid": issuer.kid}
    claims = orjson.loads(_segment(token, 1))
    assert claims.pop("jti")
    assert claims == {
        "iss": ISS,
        "sub": "alice",
        "aud": AUD,
        "exp": int(NOW) + 600,
        "iat": int(NOW),
        "nbf": int(NOW),
        "client_id": "cli",
        "scope": "tools:call files:read",
    }
    verifier = AccessTokenVerifier([TrustedIssuer(ISS, issuer.public_keys())], clock=FakeClock(NOW + 1))
    verified = await verifier.verify(token, audience=AUD)
    assert verified.scope == {"tools:call", "files:read"}
    assert verified.client_id == "cli"


def test_tokens_are_unique(tmp_path: Path) -> None:
    issuer = LocalIssuer.load_or_create(tmp_path / "issuer.jwk", ISS)
    jtis = {orjson.loads(_segment(issuer.mint("alice", AUD, now=NOW), 1))["jti"] for _ in range(20)}
    assert len(jtis) == 20


def test_extra_claims(tmp_path: Path) -> None:
    issuer = LocalIssuer.load_or_create(tmp_path / "issuer.jwk", ISS)
    claims = orjson.loads(_segment(issuer.mint("alice", AUD, now=NOW, extra={"groups": ["ops"]}), 1))
    assert claims["groups"] == ["ops"]
    assert "scope" not in claims  # no scopes asked: no scope claim


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"extra": {"aud": "https://elsewhere.example"}}, id="extra-replaces-aud"),
        pytest.param({"extra": {"exp": 1}}, id="extra-replaces-exp"),
        pytest.param({"scope": ["two words"]}, id="scope-with-space"),
        pytest.param({"scope": ['a"b']}, id="scope-with-quote"),
        pytest.param({"lifetime": 0}, id="zero-lifetime"),
        pytest.param({"client_id": ""}, id="empty-client-id"),
    ],
)
def test_bad_mint_arguments(tmp_path: Path, kwargs: dict[str, object]) -> None:
    issuer = LocalIssuer.load_or_create(tmp_path / "issuer.jwk", ISS)
    with pytest.raises(ValueError):  # noqa: PT011 - the message is not part of the contract
        issuer.mint("alice", AUD, **kwargs)  # type: ignore[arg-type]


def _segment(token: str, index: int) -> bytes:
    part = token.split(".")[index]
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
