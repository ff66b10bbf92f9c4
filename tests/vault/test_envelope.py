"""The vault's envelope encryption: round trips, the documented layout, and every kind of tampering refused
with the same opaque ``InvalidCiphertext``."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mcp_bastion.errors import Unavailable
from mcp_bastion.vault.envelope import InvalidCiphertext, Vault
from mcp_bastion.vault.kek import KEK, MemoryKeys, UnknownKeyVersion

K1 = KEK("k1", bytes(range(32)))
K2 = KEK("k2", bytes(range(32, 64)))
SECRET = b"upstream refresh token: rt_0123456789"


def vault(*keks: KEK) -> Vault:
    return Vault(MemoryKeys(keks or (K1,)))


def sealed(plaintext: bytes = SECRET, *, context: bytes = b"") -> bytes:
    return vault().seal(plaintext, owner="user-1", purpose="upstream-token", context=context)


def _flip(blob: bytes, index: int) -> bytes:
    return blob[:index] + bytes([blob[index] ^ 0x01]) + blob[index + 1 :]


def _refused(blob: bytes, *, owner: str = "user-1", purpose: str = "upstream-token", context: bytes = b"") -> None:
    with pytest.raises(InvalidCiphertext) as caught:
        vault(K1, K2).open(blob, owner=owner, purpose=purpose, context=context)
    # Opaque: one message for every failure, and no cause travelling with it.
    assert str(caught.value) == "invalid ciphertext"
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__ or caught.value.__context__ is None


# Round trips.


@pytest.mark.parametrize("plaintext", [b"", b"x", SECRET, os.urandom(70_000)], ids=["empty", "one", "token", "70k"])
def test_round_trip(plaintext: bytes) -> None:
    blob = vault().seal(plaintext, owner="user-1", purpose="upstream-token", context=b"row 7")
    assert vault().open(blob, owner="user-1", purpose="upstream-token", context=b"row 7") == plaintext


def test_every_seal_uses_a_fresh_data_key_and_nonces() -> None:
    first, second = sealed(), sealed()
    assert first != second
    assert SECRET not in first
    # Everything after the header differs: wrap nonce, wrapped DEK, data nonce, ciphertext.
    header = 2 + len(K1.id)
    assert first[header : header + 12] != second[header : header + 12]
    assert first[header + 12 : header + 60] != second[header + 12 : header + 60]


def test_layout_is_the_documented_one() -> None:
    """An independent decoder, written from the module docstring with ``cryptography`` directly."""
    blob = sealed(context=b"ctx")
    assert blob[0] == 1
    id_length = blob[1]
    kek_id = blob[2 : 2 + id_length]
    assert kek_id == b"k1"
    rest = blob[2 + id_length :]
    wrap_nonce, wrapped, data_nonce, body = rest[:12], rest[12:60], rest[60:72], rest[72:]
    assert len(body) == len(SECRET) + 16

    def field(value: bytes) -> bytes:
        return len(value).to_bytes(4, "big") + value

    def aad(layer: bytes) -> bytes:
        labels = field(kek_id) + field(b"user-1") + field(b"upstream-token") + field(b"ctx")
        return b"mcp-bastion/vault\x00\x01" + layer + labels

    dek = AESGCM(K1.key).decrypt(wrap_nonce, wrapped, aad(b"W"))
    assert AESGCM(dek).decrypt(data_nonce, body, aad(b"D")) == SECRET


def test_deterministic_with_injected_randomness() -> None:
    counter = iter(range(1, 1000))

    def random(n: int) -> bytes:
        return bytes([next(counter)]) * n

    one = Vault(MemoryKeys([K1]), random=random).seal(b"x", owner="o", purpose="p")
    counter = iter(range(1, 1000))
    assert Vault(MemoryKeys([K1]), random=random).seal(b"x", owner="o", purpose="p") == one


# Tampering and misplacement.


def test_every_flipped_byte_is_refused() -> None:
    blob = sealed()
    for index in range(len(blob)):
        _refused(_flip(blob, index))


def test_every_truncation_and_extension_is_refused() -> None:
    blob = sealed()
    for length in range(len(blob)):
        _refused(blob[:length])
    _refused(blob + b"\x00")


@pytest.mark.parametrize(
    ("owner", "purpose", "context"),
    [
        pytest.param("user-2", "upstream-token", b"", id="another-owner"),
        pytest.param("user-1", "client-secret", b"", id="another-purpose"),
        pytest.param("user-1", "upstream-token", b"row 8", id="another-context"),
        pytest.param("user-", "1upstream-token", b"", id="labels-shifted"),
        pytest.param("USER-1", "upstream-token", b"", id="owner-case"),
    ],
)
def test_moved_to_another_place_is_refused(owner: str, purpose: str, context: bytes) -> None:
    _refused(sealed(), owner=owner, purpose=purpose, context=context)


def _relabelled(blob: bytes, kek_id: bytes) -> bytes:
    return bytes([1, len(kek_id)]) + kek_id + blob[2 + blob[1] :]


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda blob: b"", id="empty"),
        pytest.param(lambda blob: b"\x01", id="version-only"),
        pytest.param(lambda blob: b"\x02" + blob[1:], id="unknown-version"),
        pytest.param(lambda blob: b"\x00" + blob[1:], id="version-zero"),
        pytest.param(lambda blob: os.urandom(len(blob)), id="garbage"),
        pytest.param(lambda blob: b"\x01\x00" + blob[2:], id="empty-kek-id"),
        pytest.param(lambda blob: b"\x01\xff" + blob[2:], id="kek-id-too-long"),
        pytest.param(lambda blob: _relabelled(blob, b"k 1"), id="kek-id-bad-character"),
        pytest.param(lambda blob: _relabelled(blob, "k\u00e9".encode()), id="kek-id-not-ascii"),
        pytest.param(lambda blob: _relabelled(blob, b"k2"), id="relabelled-to-another-kek"),
        pytest.param(lambda blob: _relabelled(blob, b"k3"), id="unknown-kek"),
    ],
)
def test_malformed_blobs_are_refused(mutate: Callable[[bytes], bytes]) -> None:
    _refused(mutate(sealed()))


def test_a_blob_whose_kek_version_is_gone_is_refused() -> None:
    keys = MemoryKeys([K1])
    blob = Vault(keys).seal(SECRET, owner="o", purpose="p")
    keys.add(K2)
    keys.remove("k1")
    with pytest.raises(InvalidCiphertext):
        Vault(keys).open(blob, owner="o", purpose="p")


def test_a_different_kek_under_the_same_id_is_refused() -> None:
    blob = sealed()
    with pytest.raises(InvalidCiphertext):
        Vault(MemoryKeys([KEK("k1", bytes(32))])).open(blob, owner="user-1", purpose="upstream-token")


def test_swapping_wrapped_data_keys_between_blobs_is_refused() -> None:
    first = sealed()
    second = vault().seal(b"other secret", owner="user-2", purpose="upstream-token")
    header = 2 + len(K1.id)
    spliced = first[: header + 60] + second[header + 60 :]
    _refused(spliced)
    _refused(spliced, owner="user-2")


# KEK rotation.


def test_rotation_keeps_old_blobs_openable_and_seals_with_the_new_kek() -> None:
    keys = MemoryKeys([K1])
    box = Vault(keys)
    old = box.seal(SECRET, owner="o", purpose="p")
    keys.add(K2)
    new = box.seal(SECRET, owner="o", purpose="p")
    assert (Vault.kek_id_of(old), Vault.kek_id_of(new)) == ("k1", "k2")
    assert box.open(old, owner="o", purpose="p") == box.open(new, owner="o", purpose="p") == SECRET
    rewrapped = box.rewrap(old, owner="o", purpose="p")
    assert Vault.kek_id_of(rewrapped) == "k2"
    keys.remove("k1")
    assert box.open(rewrapped, owner="o", purpose="p") == SECRET


def test_kek_id_of_refuses_garbage() -> None:
    with pytest.raises(InvalidCiphertext):
        Vault.kek_id_of(b"\x07nonsense")


# Failures that are not about the blob.


class _DownBackend:
    """A remote KEK backend that cannot be reached."""

    @property
    def current(self) -> KEK:
        raise Unavailable("KMS unreachable")

    def get(self, kek_id: str) -> bytes:
        raise Unavailable("KMS unreachable")


def test_an_unreachable_backend_is_not_reported_as_a_forged_blob() -> None:
    blob = sealed()
    with pytest.raises(Unavailable):
        Vault(_DownBackend()).open(blob, owner="user-1", purpose="upstream-token")
    with pytest.raises(Unavailable):
        Vault(_DownBackend()).seal(SECRET, owner="user-1", purpose="upstream-token")


@pytest.mark.parametrize(("owner", "purpose"), [("", "p"), ("o", "")])
def test_empty_labels_are_a_programming_error(owner: str, purpose: str) -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        vault().seal(SECRET, owner=owner, purpose=purpose)
    with pytest.raises(ValueError, match="must not be empty"):
        vault().open(sealed(), owner=owner, purpose=purpose)


def test_a_short_random_source_is_refused() -> None:
    with pytest.raises(ValueError, match="random source"):
        Vault(MemoryKeys([K1]), random=lambda n: b"\x00" * (n - 1)).seal(SECRET, owner="o", purpose="p")


# The KEK value and the in-memory backend.


def test_kek_repr_hides_the_key() -> None:
    assert K1.key.hex() not in repr(K1)
    assert repr(K1.key) not in repr(K1)


@pytest.mark.parametrize(
    ("kek_id", "key"),
    [("", bytes(32)), ("a b", bytes(32)), ("x" * 65, bytes(32)), ("ok", bytes(16)), ("ok", bytes(33))],
)
def test_malformed_keks_are_refused(kek_id: str, key: bytes) -> None:
    with pytest.raises(ValueError, match="KEK"):
        KEK(kek_id, key)


def test_memory_keys() -> None:
    keys = MemoryKeys([K1, K2])
    assert keys.current == K2
    assert keys.get("k1") == K1.key
    with pytest.raises(UnknownKeyVersion):
        keys.get("k3")
    with pytest.raises(ValueError, match="current"):
        keys.remove("k2")
    with pytest.raises(ValueError, match="twice"):
        MemoryKeys([K1, K1])
    with pytest.raises(ValueError, match="at least one"):
        MemoryKeys([])
