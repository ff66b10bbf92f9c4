"""The signing key ring: keys created, sealed in the database, rotated with a verification window, seen by
other processes, and never stored in the clear."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import orjson
import pytest
from joserfc.jwk import ECKey
from sqlalchemy import insert, select, text, update

from mcp_bastion.errors import ConfigError, Unauthenticated, Unavailable
from mcp_bastion.oauth.access_token import AccessClaims, AccessTokenVerifier, TrustedIssuer
from mcp_bastion.oauth.localissuer import LocalIssuer
from mcp_bastion.oauth.signer import TokenSigner
from mcp_bastion.oauth.signingkeys import PURPOSE, SigningKeyRing, list_keys
from mcp_bastion.storage.db import Database
from mcp_bastion.storage.models import SigningKeyRow
from mcp_bastion.vault.envelope import Vault
from mcp_bastion.vault.keyfile import LocalKeyFile
from tests.storage.support import migrated

from .support import FakeClock, compact, signer

pytestmark = pytest.mark.anyio

ISS = "https://gw.example"
AUD = "https://gw.example/mcp/customers"
NOW = 1_800_000_000.0
LIFETIME = 600
LEEWAY = 30
STALENESS = 120.0
WINDOW = LIFETIME + LEEWAY + STALENESS


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def vault(tmp_path: Path) -> Vault:
    return Vault(LocalKeyFile(tmp_path / "state" / "vault.key"))


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with migrated(tmp_path / "state" / "bastion.db") as database:
        yield database


def ring(db: Database, vault: Vault, clock: FakeClock) -> SigningKeyRing:
    return SigningKeyRing(
        db,
        vault,
        ISS,
        max_token_lifetime=LIFETIME,
        leeway_seconds=LEEWAY,
        refresh_interval=30.0,
        max_signing_staleness=STALENESS,
        max_stale=600.0,
        clock=clock,
    )


async def loaded(db: Database, vault: Vault, clock: FakeClock) -> SigningKeyRing:
    keys = ring(db, vault, clock)
    await keys.load()
    return keys


def verifier(keys: SigningKeyRing, clock: FakeClock) -> AccessTokenVerifier:
    # No cache: each call looks the key up, as a verifier meeting the token for the first time would.
    trusted = TrustedIssuer(ISS, keys.key_source, algorithms=frozenset({"ES256"}))
    return AccessTokenVerifier([trusted], leeway_seconds=LEEWAY, clock=clock, cache_size=0)


def kid_of(token: str) -> str:
    header = orjson.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    kid = header["kid"]
    assert isinstance(kid, str)
    return kid


def mint(keys: SigningKeyRing, clock: FakeClock, lifetime: int = 300) -> str:
    return keys.mint("alice", AUD, scope=["customers.read"], lifetime=lifetime, client_id="app", now=clock())


async def reason(check: AccessTokenVerifier, token: str) -> str:
    with pytest.raises(Unauthenticated) as caught:
        await check.verify(token, audience=AUD)
    return caught.value.reason


async def rows(db: Database) -> list[tuple[str, float | None, float | None]]:
    query = select(SigningKeyRow.kid, SigningKeyRow.retired_at, SigningKeyRow.expires_at).order_by(
        SigningKeyRow.created_at
    )
    async with db.read() as connection:
        return [tuple(row) for row in (await connection.execute(query)).all()]  # type: ignore[misc]


# Loading and signing.


async def test_first_load_creates_one_key_and_later_loads_reuse_it(
    db: Database, vault: Vault, clock: FakeClock
) -> None:
    keys = await loaded(db, vault, clock)
    assert await rows(db) == [(keys.kid, None, None)]
    again = await loaded(db, vault, clock)
    assert again.kid == keys.kid
    assert len(await rows(db)) == 1
    assert [info.kid for info in await list_keys(db)] == [keys.kid]


async def test_minted_tokens_verify_over_the_key_source(db: Database, vault: Vault, clock: FakeClock) -> None:
    keys = await loaded(db, vault, clock)
    token = mint(keys, clock)
    assert kid_of(token) == keys.kid
    claims: AccessClaims = await verifier(keys, clock).verify(token, audience=AUD)
    assert (claims.issuer, claims.subject, claims.scope) == (ISS, "alice", frozenset({"customers.read"}))


async def test_the_published_set_is_public_and_names_its_algorithm(
    db: Database, vault: Vault, clock: FakeClock
) -> None:
    keys = await loaded(db, vault, clock)
    (jwk,) = keys.public_keys().as_jwks()["keys"]
    assert jwk["kid"] == keys.kid
    assert (jwk["kty"], jwk["crv"], jwk["alg"], jwk["use"]) == ("EC", "P-256", "ES256", "sig")
    assert "d" not in jwk


async def test_same_interface_as_the_local_issuer(db: Database, vault: Vault, clock: FakeClock, tmp_path: Path) -> None:
    signers: list[TokenSigner] = [
        await loaded(db, vault, clock),
        LocalIssuer.load_or_create(tmp_path / "issuer.jwk", ISS),
    ]
    for each in signers:
        assert each.issuer == ISS
        assert kid_of(each.mint("alice", AUD, now=NOW)) == each.kid
        assert each.public_keys().get(each.kid) is not None


async def test_lifetimes_over_the_cap_are_refused(db: Database, vault: Vault, clock: FakeClock) -> None:
    keys = await loaded(db, vault, clock)
    with pytest.raises(ValueError, match="at most 600"):
        mint(keys, clock, lifetime=LIFETIME + 1)
    with pytest.raises(ValueError, match="positive"):
        mint(keys, clock, lifetime=0)


async def test_unloaded_ring_refuses_to_sign(db: Database, vault: Vault, clock: FakeClock) -> None:
    keys = ring(db, vault, clock)
    with pytest.raises(RuntimeError, match="load"):
        mint(keys, clock)


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"issuer": ""}, id="no-issuer"),
        pytest.param({"max_token_lifetime": 0}, id="no-lifetime"),
        pytest.param({"refresh_interval": 300.0, "max_signing_staleness": 300.0}, id="refresh-not-below-staleness"),
        pytest.param({"max_signing_staleness": 900.0, "max_stale": 600.0}, id="staleness-over-max-stale"),
    ],
)
async def test_inconsistent_settings_are_refused(db: Database, vault: Vault, options: dict[str, object]) -> None:
    arguments: dict[str, object] = {"issuer": ISS, **options}
    issuer = arguments.pop("issuer")
    assert isinstance(issuer, str)
    with pytest.raises(ConfigError):
        SigningKeyRing(db, vault, issuer, **arguments)  # type: ignore[arg-type]


# Rotation.


async def test_rotation_keeps_old_tokens_valid_until_the_retired_key_expires(
    db: Database, vault: Vault, clock: FakeClock
) -> None:
    keys = await loaded(db, vault, clock)
    check = verifier(keys, clock)
    old_kid = keys.kid
    old = mint(keys, clock, lifetime=LIFETIME)

    clock.now += 10
    new_kid = await keys.rotate(clock())
    assert new_kid == keys.kid != old_kid
    new = mint(keys, clock)
    assert kid_of(new) == new_kid
    assert (await check.verify(new, audience=AUD)).subject == "alice"
    assert (await check.verify(old, audience=AUD)).subject == "alice"
    assert keys.public_keys().kids == {old_kid, new_kid}
    assert await rows(db) == [(old_kid, NOW + 10, NOW + 10 + WINDOW), (new_kid, None, None)]
    assert keys.retire_window == WINDOW

    # Just before the retired key leaves, it is still published; then it is gone and its tokens with it.
    clock.now = NOW + 10 + WINDOW - 1
    assert old_kid in keys.public_keys().kids
    clock.now = NOW + 10 + WINDOW
    await keys.refresh()
    assert keys.public_keys().kids == {new_kid}
    assert await reason(check, old) == "token_key_unknown"


async def test_rotation_purges_expired_keys_and_their_sealed_private_halves(
    db: Database, vault: Vault, clock: FakeClock
) -> None:
    keys = await loaded(db, vault, clock)
    first = keys.kid
    await keys.rotate(clock())
    clock.now += WINDOW
    second = keys.kid
    third = await keys.rotate(clock())
    assert [kid for kid, _, _ in await rows(db)] == [second, third]
    assert first not in keys.public_keys().kids


async def test_revoke_previous_drops_old_keys_at_once(db: Database, vault: Vault, clock: FakeClock) -> None:
    keys = await loaded(db, vault, clock)
    check = verifier(keys, clock)
    old = mint(keys, clock)
    new_kid = await keys.rotate(clock(), revoke_previous=True)
    assert keys.public_keys().kids == {new_kid}
    assert [kid for kid, _, _ in await rows(db)] == [new_kid]
    assert await reason(check, old) == "token_key_unknown"


async def test_rotate_works_without_a_loaded_view(db: Database, vault: Vault, clock: FakeClock) -> None:
    """What ``mcp-bastion keys rotate`` does: a fresh ring, straight to rotate."""
    gateway = await loaded(db, vault, clock)
    operator = ring(db, vault, clock)
    new_kid = await operator.rotate()
    assert operator.kid == new_kid != gateway.kid


# Several processes on one database.


async def test_a_second_process_sees_the_rotation(db: Database, vault: Vault, clock: FakeClock) -> None:
    first = await loaded(db, vault, clock)
    second = await loaded(db, vault, clock)
    check = verifier(second, clock)
    old = mint(second, clock)
    new_kid = await first.rotate(clock())
    token = mint(first, clock)

    # An unknown kid makes the second ring look again (after waiting out the one-second throttle: the token
    # is accepted, not refused for arriving early).
    assert (await check.verify(token, audience=AUD)).subject == "alice"
    assert second.kid == new_kid
    assert kid_of(mint(second, clock)) == new_kid
    assert (await check.verify(old, audience=AUD)).subject == "alice"  # retired, still published


async def test_unknown_kids_share_one_read_per_interval(db: Database, vault: Vault, clock: FakeClock) -> None:
    keys = await loaded(db, vault, clock)
    reads = 0
    original = keys._refresh_recording

    async def counting(now: float) -> None:
        nonlocal reads
        reads += 1
        await original(now)

    keys._refresh_recording = counting  # type: ignore[method-assign]
    source = keys.key_source
    with anyio.fail_after(5):
        found = await asyncio.gather(*(source.key_for(f"invented-{n}") for n in range(50)))
    assert found == [None] * 50
    assert reads == 1  # fifty invented kids at once: one table read, after the throttle interval


async def test_a_known_kid_refreshes_on_schedule(db: Database, vault: Vault, clock: FakeClock) -> None:
    first = await loaded(db, vault, clock)
    second = await loaded(db, vault, clock)
    check = verifier(second, clock)
    old = mint(second, clock)
    await first.rotate(clock())
    clock.now += 29
    await check.verify(old, audience=AUD)
    assert second.kid != first.kid  # not due yet
    clock.now += 1
    await check.verify(old, audience=AUD)
    assert second.kid == first.kid


async def test_a_stale_ring_stops_signing(db: Database, vault: Vault, clock: FakeClock) -> None:
    keys = await loaded(db, vault, clock)
    clock.now += STALENESS
    mint(keys, clock)
    clock.now += 1
    with pytest.raises(Unavailable):
        mint(keys, clock)
    await keys.refresh()
    mint(keys, clock)


async def test_the_key_source_fails_closed_when_the_database_stays_unreadable(
    db: Database, vault: Vault, clock: FakeClock
) -> None:
    keys = await loaded(db, vault, clock)
    check = verifier(keys, clock)
    token = mint(keys, clock)
    async with db.transaction() as connection:
        await connection.execute(text("DROP TABLE signing_keys"))
    clock.now += 60  # refresh due, and it fails: the last good set is still used for a while
    await check.verify(token, audience=AUD)
    with pytest.raises(Unavailable):
        await keys.refresh()
    clock.now += 601
    with pytest.raises(Unavailable):
        await check.verify(token, audience=AUD)


async def test_maintain_follows_rotations_made_elsewhere(db: Database, vault: Vault) -> None:
    first = SigningKeyRing(db, vault, ISS)
    second = SigningKeyRing(db, vault, ISS, refresh_interval=0.01)
    await first.load()
    await second.load()
    new_kid = await first.rotate()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(second.maintain)
            while second.kid != new_kid:
                await anyio.sleep(0.01)
            group.cancel_scope.cancel()


# What database access alone cannot do.


async def test_a_row_written_without_the_vault_is_never_trusted(
    db: Database, vault: Vault, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    keys = await loaded(db, vault, clock)
    attacker = ECKey.generate_key("P-256", private=True)
    attacker_kid = attacker.thumbprint()
    public = {**attacker.as_dict(private=False), "kid": attacker_kid, "alg": "ES256", "use": "sig"}
    row = {
        "kid": attacker_kid,
        "alg": "ES256",
        "public_jwk": public,
        "private_jwk": b"\x01\x02k1" + bytes(100),
        "created_at": NOW + 1,
        "retired_at": None,
        "expires_at": None,
    }
    async with db.transaction() as connection:
        await connection.execute(insert(SigningKeyRow).values(row))
    with caplog.at_level(logging.ERROR):
        await keys.refresh()
    assert attacker_kid not in keys.public_keys().kids
    assert keys.kid != attacker_kid  # the newest *usable* key still signs
    assert f"signing key {attacker_kid!r}" in caplog.text
    header = {"alg": "ES256", "typ": "at+jwt", "kid": attacker_kid}
    claims = {"iss": ISS, "sub": "admin", "aud": AUD, "exp": NOW + 300, "iat": NOW}
    forged = compact(header, claims, signer("ES256", attacker))
    clock.now += 1
    assert await reason(verifier(keys, clock), forged) == "token_key_unknown"


async def test_an_altered_public_key_or_a_moved_private_key_is_left_out(
    db: Database, vault: Vault, clock: FakeClock
) -> None:
    keys = await loaded(db, vault, clock)
    retired = keys.kid
    current = await keys.rotate(clock())
    other = ECKey.generate_key("P-256", private=True).as_dict(private=False)
    async with db.transaction() as connection:
        # The retired key's published half replaced by someone else's.
        await connection.execute(
            update(SigningKeyRow)
            .where(SigningKeyRow.kid == retired)
            .values(public_jwk={"kty": "EC", "crv": "P-256", "x": other["x"], "y": other["y"], "kid": retired})
        )
    await keys.refresh()
    assert keys.public_keys().kids == {current}

    async with db.read() as connection:
        sealed = (
            await connection.execute(select(SigningKeyRow.private_jwk).where(SigningKeyRow.kid == current))
        ).scalar_one()
    copy = ECKey.generate_key("P-256", private=True)
    row = {
        "kid": copy.thumbprint(),
        "alg": "ES256",
        "public_jwk": copy.as_dict(private=False),
        "private_jwk": sealed,  # the current key's sealed blob, under another kid
        "created_at": NOW + 5,
        "retired_at": None,
        "expires_at": None,
    }
    async with db.transaction() as connection:
        await connection.execute(insert(SigningKeyRow).values(row))
    await keys.refresh()
    assert keys.public_keys().kids == {current}
    assert keys.kid == current


async def test_another_vault_cannot_use_the_keys(db: Database, vault: Vault, clock: FakeClock, tmp_path: Path) -> None:
    await loaded(db, vault, clock)
    elsewhere = Vault(LocalKeyFile(tmp_path / "other.key"))
    with pytest.raises(ConfigError, match="no usable signing key"):
        await loaded(db, elsewhere, clock)


async def test_no_private_key_is_stored_in_the_clear(
    db: Database, vault: Vault, clock: FakeClock, tmp_path: Path
) -> None:
    keys = await loaded(db, vault, clock)
    await keys.rotate(clock())
    await keys.rotate(clock())
    async with db.read() as connection:
        stored = (await connection.execute(select(SigningKeyRow.kid, SigningKeyRow.private_jwk))).all()
    assert len(stored) == 3
    needles: list[bytes] = []
    for kid, blob in stored:
        private = orjson.loads(vault.open(bytes(blob), owner=kid, purpose=PURPOSE))
        d = private["d"]
        raw = base64.urlsafe_b64decode(d + "=" * (-len(d) % 4))
        assert len(raw) == 32
        needles += [raw, d.encode(), base64.b64encode(raw), base64.b64encode(raw).rstrip(b"="), raw.hex().encode()]
    files = [path for path in (tmp_path / "state").iterdir() if path.name.startswith("bastion.db")]
    assert tmp_path / "state" / "bastion.db" in files
    contents = b"".join(path.read_bytes() for path in files)
    assert all(kid.encode() in contents for kid, _ in stored)  # the scan does see the rows
    for needle in needles:
        assert needle not in contents
    assert vault_kek(tmp_path) not in contents


def vault_kek(tmp_path: Path) -> bytes:
    return LocalKeyFile(tmp_path / "state" / "vault.key").current.key
