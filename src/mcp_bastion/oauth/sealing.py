"""Sealing small secrets the authorization server must get back later (the successor token pair kept for the
refresh grace window): AES-256-GCM (NIST SP 800-38D) with associated data binding each blob to its place.

``Sealer`` is the seam the vault replaces; ``MemorySealer`` keeps a random key in process memory, so sealed
blobs die with the process (acceptable: they only matter for a few seconds).

Blob layout: ``version (1 byte) || nonce (12 bytes) || ciphertext+tag``. Random 96-bit nonces are safe for
far more than 2**32 seals per key at our volumes (SP 800-38D §8.3).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Final, Protocol, final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_VERSION: Final = b"\x01"
_NONCE_BYTES: Final = 12
KEY_BYTES: Final = 32


class Unsealable(Exception):
    """The blob was not sealed by this key for this associated data (or was altered). Deliberately opaque."""


class Sealer(Protocol):
    def seal(self, plaintext: bytes, aad: bytes) -> bytes: ...

    def open(self, ciphertext: bytes, aad: bytes) -> bytes:
        """The plaintext, or ``Unsealable``."""
        ...


@final
class MemorySealer:
    """AES-256-GCM with one key held in memory (random unless given)."""

    __slots__ = ("_aead", "_random")

    def __init__(self, key: bytes | None = None, *, random: Callable[[int], bytes] = os.urandom) -> None:
        key = random(KEY_BYTES) if key is None else key
        if len(key) != KEY_BYTES:
            raise ValueError(f"AES-256-GCM needs a {KEY_BYTES}-byte key, got {len(key)}")
        self._aead = AESGCM(key)  # built once: the cipher object is reusable and costs the key schedule
        self._random = random

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = self._random(_NONCE_BYTES)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext, aad)

    def open(self, ciphertext: bytes, aad: bytes) -> bytes:
        if ciphertext[:1] != _VERSION or len(ciphertext) < 1 + _NONCE_BYTES + 16:
            raise Unsealable("not a sealed blob")
        nonce, body = ciphertext[1 : 1 + _NONCE_BYTES], ciphertext[1 + _NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, body, aad)
        except InvalidTag as exc:
            raise Unsealable("authentication failed") from exc
