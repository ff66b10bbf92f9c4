"""Envelope encryption of small secrets with AES-256-GCM (NIST SP 800-38D): a fresh data key per record,
wrapped by a key-encryption key (KEK), every blob bound to the owner and purpose it was sealed for.

Each ``seal`` draws a new 256-bit data-encryption key (DEK), encrypts the plaintext with it, and wraps the
DEK with the current KEK. The wrap is AES-256-GCM too, not AES key wrap (RFC 3394/5649): GCM takes
associated data, so the wrapped DEK is bound to the same owner/purpose/KEK id as the data and cannot be
lifted into another record, and one primitive and one audited code path serve both layers. It costs 20
bytes per blob over RFC 5649 and spends one random 96-bit nonce of the KEK per seal; SP 800-38D §8.3 caps
random nonces at 2**32 encryptions per key, far beyond the secrets a gateway stores between KEK rotations.
The DEK itself encrypts exactly one message, so its nonce can never repeat.

Blob layout (version 1), parsed strictly (every length is fixed or announced, no trailing guesses)::

    version     1 byte    0x01
    id_length   1 byte    1..64
    kek_id      id_length ASCII bytes, [A-Za-z0-9._:-]
    wrap_nonce  12 bytes
    wrapped_dek 48 bytes  AES-256-GCM(KEK, DEK) with its 16-byte tag
    data_nonce  12 bytes
    ciphertext  n + 16 bytes  AES-256-GCM(DEK, plaintext) with its tag

Associated data of both layers: a domain label, the format version, a layer label, then the KEK id, owner,
purpose and the caller's extra ``context``, each length-prefixed (so ``("ab", "c")`` and ``("a", "bc")``
differ). A blob copied to another owner, purpose or context, or relabelled with another KEK id, fails.

Invariants:
- every failure to open (truncated, unknown version or KEK id, flipped bit, wrong owner/purpose/context,
  KEK version no longer held) raises the same ``InvalidCiphertext`` with the same message and no cause
  attached: the caller learns nothing about which check failed;
- a KEK backend that cannot answer at all raises its own error, never ``InvalidCiphertext``;
- plaintext and keys never appear in exceptions or ``repr``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Final, final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mcp_bastion.vault.kek import KEK_ID, KEY_BYTES, KeyEncryptionKeys, UnknownKeyVersion

VERSION: Final = 1
NONCE_BYTES: Final = 12
"""96-bit nonces, the length SP 800-38D §8.2 recommends."""
TAG_BYTES: Final = 16
WRAPPED_DEK_BYTES: Final = KEY_BYTES + TAG_BYTES
MAX_KEK_ID_BYTES: Final = 64
_DOMAIN: Final = b"mcp-bastion/vault\x00"
_WRAP: Final = b"W"
_DATA: Final = b"D"


class InvalidCiphertext(Exception):
    """The blob cannot be opened here. Deliberately says nothing about why."""

    def __init__(self) -> None:
        super().__init__("invalid ciphertext")


def _field(value: bytes) -> bytes:
    return len(value).to_bytes(4, "big") + value


def _associated_data(layer: bytes, kek_id: bytes, owner: str, purpose: str, context: bytes) -> bytes:
    return b"".join(
        (
            _DOMAIN,
            bytes((VERSION,)),
            layer,
            _field(kek_id),
            _field(owner.encode("utf-8")),
            _field(purpose.encode("utf-8")),
            _field(context),
        )
    )


def _check_labels(owner: str, purpose: str) -> None:
    # Programming errors, raised before any crypto: an empty owner would make every record look alike.
    if not owner or not purpose:
        raise ValueError("owner and purpose must not be empty")


@final
class Vault:
    """Seals and opens secrets with a fresh data key per record, wrapped by the backend's KEKs."""

    __slots__ = ("_kek", "_random", "_wrappers")

    def __init__(self, kek: KeyEncryptionKeys, *, random: Callable[[int], bytes] = os.urandom) -> None:
        self._kek = kek
        self._random = random
        # One AESGCM object per KEK version: it holds the expanded key schedule, reused on every call.
        self._wrappers: dict[str, tuple[bytes, AESGCM]] = {}

    @property
    def kek(self) -> KeyEncryptionKeys:
        """The KEK backend (for rotation and status)."""
        return self._kek

    def seal(self, plaintext: bytes, *, owner: str, purpose: str, context: bytes = b"") -> bytes:
        """Encrypt ``plaintext`` for ``owner`` and ``purpose`` (and optional extra ``context`` bytes)."""
        _check_labels(owner, purpose)
        current = self._kek.current
        kek_id = current.id.encode("ascii")
        dek = self._random(KEY_BYTES)
        wrap_nonce, data_nonce = self._random(NONCE_BYTES), self._random(NONCE_BYTES)
        if len(dek) != KEY_BYTES or len(wrap_nonce) != NONCE_BYTES or len(data_nonce) != NONCE_BYTES:
            raise ValueError("the random source returned the wrong number of bytes")
        wrapper = self._wrapper(current.id, current.key)
        wrapped = wrapper.encrypt(wrap_nonce, dek, _associated_data(_WRAP, kek_id, owner, purpose, context))
        body = AESGCM(dek).encrypt(data_nonce, plaintext, _associated_data(_DATA, kek_id, owner, purpose, context))
        return b"".join((bytes((VERSION, len(kek_id))), kek_id, wrap_nonce, wrapped, data_nonce, body))

    def open(self, blob: bytes, *, owner: str, purpose: str, context: bytes = b"") -> bytes:
        """The plaintext sealed for exactly this ``owner``/``purpose``/``context``; ``InvalidCiphertext`` if not."""
        _check_labels(owner, purpose)
        kek_id, wrap_nonce, wrapped, data_nonce, body = _parse(blob)
        name = kek_id.decode("ascii")
        try:
            key = self._kek.get(name)
        except UnknownKeyVersion:
            raise InvalidCiphertext() from None
        wrapper = self._wrapper(name, key)  # outside the try: a bad key from the backend is not a bad blob
        try:
            dek = wrapper.decrypt(wrap_nonce, wrapped, _associated_data(_WRAP, kek_id, owner, purpose, context))
            return AESGCM(dek).decrypt(data_nonce, body, _associated_data(_DATA, kek_id, owner, purpose, context))
        except InvalidTag:
            # ``from None``: not even the cause travels with the error.
            raise InvalidCiphertext() from None

    def rewrap(self, blob: bytes, *, owner: str, purpose: str, context: bytes = b"") -> bytes:
        """The same secret sealed afresh under the current KEK (for KEK rotation); ``InvalidCiphertext`` as ``open``."""
        plaintext = self.open(blob, owner=owner, purpose=purpose, context=context)
        return self.seal(plaintext, owner=owner, purpose=purpose, context=context)

    @staticmethod
    def kek_id_of(blob: bytes) -> str:
        """The KEK version a blob names (unauthenticated until opened: for status counts, not decisions)."""
        return _parse(blob)[0].decode("ascii")

    def _wrapper(self, kek_id: str, key: bytes) -> AESGCM:
        cached = self._wrappers.get(kek_id)
        if cached is not None and cached[0] == key:
            return cached[1]
        if len(key) != KEY_BYTES:
            raise ValueError(f"KEK {kek_id!r} is not {KEY_BYTES} bytes")
        wrapper = AESGCM(key)
        self._wrappers[kek_id] = (key, wrapper)
        return wrapper


def _parse(blob: bytes) -> tuple[bytes, bytes, bytes, bytes, bytes]:
    """Split a version-1 blob into (kek_id, wrap_nonce, wrapped_dek, data_nonce, ciphertext); strict."""
    if len(blob) < 2 or blob[0] != VERSION:
        raise InvalidCiphertext()
    id_length = blob[1]
    start = 2 + id_length
    fixed = NONCE_BYTES + WRAPPED_DEK_BYTES + NONCE_BYTES
    if not 1 <= id_length <= MAX_KEK_ID_BYTES or len(blob) < start + fixed + TAG_BYTES:
        raise InvalidCiphertext()
    kek_id = bytes(blob[2:start])
    if not kek_id.isascii() or not KEK_ID.fullmatch(kek_id.decode("ascii")):
        raise InvalidCiphertext()
    wrap_nonce = bytes(blob[start : start + NONCE_BYTES])
    position = start + NONCE_BYTES
    wrapped = bytes(blob[position : position + WRAPPED_DEK_BYTES])
    position += WRAPPED_DEK_BYTES
    data_nonce = bytes(blob[position : position + NONCE_BYTES])
    body = bytes(blob[position + NONCE_BYTES :])
    return kek_id, wrap_nonce, wrapped, data_nonce, body
