"""The vault behind the authorization server's ``Sealer`` seam: same contract as ``MemorySealer``."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mcp_bastion.oauth.sealing import Sealer, Unsealable
from mcp_bastion.vault.envelope import Vault
from mcp_bastion.vault.kek import KEK, MemoryKeys
from mcp_bastion.vault.sealer import VaultSealer

AAD = b"family-1\x00" + bytes(32)


def sealer(key: bytes = bytes(32)) -> Sealer:
    return VaultSealer(Vault(MemoryKeys([KEK("k1", key)])))


def test_round_trip() -> None:
    blob = sealer().seal(b'{"access_token":"..."}', AAD)
    assert sealer().open(blob, AAD) == b'{"access_token":"..."}'


def _flip(blob: bytes, index: int) -> bytes:
    return blob[:index] + bytes([blob[index] ^ 1]) + blob[index + 1 :]


@pytest.mark.parametrize(
    ("mutate", "aad"),
    [
        pytest.param(lambda blob: blob, b"family-2\x00" + bytes(32), id="copied-to-another-family"),
        pytest.param(lambda blob: _flip(blob, len(blob) - 1), AAD, id="tag-flipped"),
        pytest.param(lambda blob: b"\x02" + blob[1:], AAD, id="unknown-version"),
        pytest.param(lambda blob: blob[:20], AAD, id="truncated"),
        pytest.param(lambda blob: b"", AAD, id="empty"),
    ],
)
def test_tampering_is_unsealable(mutate: Callable[[bytes], bytes], aad: bytes) -> None:
    blob = sealer().seal(b"pair", AAD)
    with pytest.raises(Unsealable) as caught:
        sealer().open(mutate(blob), aad)
    assert caught.value.__cause__ is None


def test_other_kek_is_unsealable() -> None:
    blob = sealer().seal(b"pair", AAD)
    with pytest.raises(Unsealable):
        sealer(bytes(range(32))).open(blob, AAD)


def test_bound_to_its_owner_and_purpose() -> None:
    vault = Vault(MemoryKeys([KEK("k1", bytes(32))]))
    blob = VaultSealer(vault).seal(b"pair", AAD)
    with pytest.raises(Unsealable):
        VaultSealer(vault, purpose="something-else").open(blob, AAD)
