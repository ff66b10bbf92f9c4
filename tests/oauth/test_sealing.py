"""AES-256-GCM sealing of the refresh grace pair: round trip, and every kind of tampering refused."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mcp_bastion.oauth.sealing import MemorySealer, Unsealable
from tests.oauth.asworld import seeded


def test_round_trip() -> None:
    sealer = MemorySealer(random=seeded(3))
    blob = sealer.seal(b"pair", b"family\x00hash")
    assert b"pair" not in blob
    assert sealer.open(blob, b"family\x00hash") == b"pair"


def test_nonces_differ() -> None:
    sealer = MemorySealer(random=seeded(3))
    assert sealer.seal(b"x", b"a") != sealer.seal(b"x", b"a")


def _flip(blob: bytes, index: int) -> bytes:
    return blob[:index] + bytes([blob[index] ^ 1]) + blob[index + 1 :]


@pytest.mark.parametrize(
    ("mutate", "aad"),
    [
        pytest.param(lambda blob: blob, b"other-family\x00hash", id="blob-copied-to-another-family"),
        pytest.param(lambda blob: _flip(blob, len(blob) - 1), b"family\x00hash", id="tag-flipped"),
        pytest.param(lambda blob: _flip(blob, 5), b"family\x00hash", id="nonce-flipped"),
        pytest.param(lambda blob: b"\x02" + blob[1:], b"family\x00hash", id="unknown-version"),
        pytest.param(lambda blob: blob[:20], b"family\x00hash", id="truncated"),
        pytest.param(lambda blob: b"", b"family\x00hash", id="empty"),
    ],
)
def test_tampering_refused(mutate: Callable[[bytes], bytes], aad: bytes) -> None:
    sealer = MemorySealer(random=seeded(3))
    blob = sealer.seal(b"pair", b"family\x00hash")
    with pytest.raises(Unsealable):
        sealer.open(mutate(blob), aad)


def test_other_key_refused() -> None:
    blob = MemorySealer(random=seeded(3)).seal(b"pair", b"a")
    with pytest.raises(Unsealable):
        MemorySealer(random=seeded(4)).open(blob, b"a")


def test_key_size_checked() -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the only ValueError it raises
        MemorySealer(b"short")
