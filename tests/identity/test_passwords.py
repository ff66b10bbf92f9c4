"""argon2id hashing: explicit parameters, NFKC, re-hash detection, and a dummy verification that costs the same."""

from __future__ import annotations

import pytest

from mcp_bastion.identity.passwords import DEFAULT_PARAMETERS, HashParameters, Passwords, WrongPassword
from tests.identity.support import FAST, OLD, spy_on

pytestmark = pytest.mark.anyio


async def test_default_parameters_are_rfc_9106_low_memory() -> None:
    assert HashParameters(time_cost=3, memory_cost=65536, parallelism=4) == DEFAULT_PARAMETERS
    encoded = await Passwords().hash("correct horse battery staple")
    assert encoded.startswith("$argon2id$v=19$m=65536,t=3,p=4$")


async def test_hash_and_verify() -> None:
    passwords = Passwords(FAST)
    encoded = await passwords.hash("correct horse battery staple")
    assert encoded.startswith("$argon2id$v=19$m=8,t=1,p=1$")
    assert encoded != await passwords.hash("correct horse battery staple")  # salted
    await passwords.verify(encoded, "correct horse battery staple")
    with pytest.raises(WrongPassword):
        await passwords.verify(encoded, "correct horse battery stapl")


async def test_passwords_are_nfkc_normalised() -> None:
    passwords = Passwords(FAST)
    encoded = await passwords.hash("caf\u00e9-p\u00e4ssword")  # composed
    await passwords.verify(encoded, "cafe\u0301-pa\u0308ssword")  # decomposed


@pytest.mark.parametrize("stored", ["", "not a hash", "$argon2id$v=19$m=8,t=1,p=1$broken"])
async def test_an_unreadable_stored_hash_is_a_wrong_password(stored: str) -> None:
    passwords = Passwords(FAST)
    with pytest.raises(WrongPassword):
        await passwords.verify(stored, "anything at all")
    assert passwords.needs_rehash(stored)


async def test_needs_rehash_when_the_parameters_changed() -> None:
    old = await Passwords(OLD).hash("correct horse battery staple")
    current = Passwords(FAST)
    assert current.needs_rehash(old)
    await current.verify(old, "correct horse battery staple")  # an old hash still verifies
    assert not current.needs_rehash(await current.hash("correct horse battery staple"))


async def test_the_dummy_verification_is_a_real_one_with_our_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    passwords = Passwords(FAST)
    spy = spy_on(monkeypatch)
    await passwords.dummy_verify("whatever was typed")
    await passwords.dummy_verify("correct horse battery staple")
    assert spy.dummies == 2
    (dummy_hash,) = {encoded for encoded, _ in spy.calls}
    # Same algorithm and costs as a stored hash, so the same time: nothing to re-hash, nothing matches.
    assert dummy_hash.startswith("$argon2id$v=19$m=8,t=1,p=1$")
    assert not passwords.needs_rehash(dummy_hash)
