"""Key-encryption keys (KEKs): the seam between the vault and whatever keeps its root keys.

A backend holds one or more KEK *versions*, each a 256-bit AES key with a stable id; one of them is
``current`` (new records are wrapped with it), the others stay available for opening older records until
they are re-wrapped. The vault writes the id into every blob, so a rotation never strands a record.

Invariants:
- a KEK id is 1-64 characters of ``[A-Za-z0-9._:-]`` (it is written into blobs as ASCII, length-prefixed);
- a KEK is exactly 32 bytes (AES-256) and its ``repr`` never shows the key;
- ``get`` of an id the backend does not hold raises ``UnknownKeyVersion``; any other failure of a backend
  (a remote one that cannot be reached) raises its own error, which the vault lets through: "cannot open
  right now" must not look like "this blob is forged".

The protocol is synchronous on purpose: the vault runs on the request path (target: under 20 µs per open),
so a remote backend (OpenBao/Vault Transit, AWS KMS) unwraps its KEK versions ahead of time, in its own
async refresh, and serves them from memory here.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Protocol, final

KEY_BYTES: Final = 32
"""AES-256."""
KEK_ID: Final = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def b64url_encode(data: bytes) -> str:
    """Unpadded base64url (the key files' encoding of keys and wrapped keys)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str, what: str) -> bytes:
    """The bytes of unpadded base64url ``text``; ``ValueError`` naming ``what`` (never the value) if not."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"{what} is not base64url") from exc


class UnknownKeyVersion(LookupError):
    """The backend holds no KEK with this id (never had it, or it was destroyed)."""


def check_kek_id(kek_id: str) -> str:
    """Return ``kek_id`` if it is a well-formed KEK id; raise ``ValueError`` otherwise."""
    if not KEK_ID.fullmatch(kek_id):
        raise ValueError(f"KEK id {kek_id!r}: 1-64 characters of A-Z a-z 0-9 . _ : -")
    return kek_id


@dataclass(frozen=True, slots=True)
class KEK:
    """One KEK version: its id and its 32 key bytes (never shown by ``repr``)."""

    id: str
    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        check_kek_id(self.id)
        if len(self.key) != KEY_BYTES:
            raise ValueError(f"KEK {self.id!r}: {len(self.key)} bytes, AES-256 needs {KEY_BYTES}")


class KeyEncryptionKeys(Protocol):
    """Where the vault gets its KEKs: ``LocalKeyFile`` today, OpenBao/Vault Transit or AWS KMS later."""

    @property
    def current(self) -> KEK:
        """The version new records are wrapped with."""
        ...

    def get(self, kek_id: str) -> bytes:
        """The key of version ``kek_id``; ``UnknownKeyVersion`` if the backend does not hold it."""
        ...


@final
class MemoryKeys:
    """KEK versions held in memory only (tests, and a template for new backends); the last one is current."""

    __slots__ = ("_keys",)

    def __init__(self, keys: Iterable[KEK]) -> None:
        self._keys: dict[str, KEK] = {}
        for kek in keys:
            if kek.id in self._keys:
                raise ValueError(f"KEK id {kek.id!r} appears twice")
            self._keys[kek.id] = kek
        if not self._keys:
            raise ValueError("at least one KEK is needed")

    @property
    def current(self) -> KEK:
        return next(reversed(self._keys.values()))

    def get(self, kek_id: str) -> bytes:
        kek = self._keys.get(kek_id)
        if kek is None:
            raise UnknownKeyVersion(kek_id)
        return kek.key

    def add(self, kek: KEK) -> None:
        """Add a version and make it current."""
        if kek.id in self._keys:
            raise ValueError(f"KEK id {kek.id!r} exists already")
        self._keys[kek.id] = kek

    def remove(self, kek_id: str) -> None:
        """Forget a version (records still wrapped with it can no longer be opened)."""
        if kek_id == self.current.id:
            raise ValueError("the current KEK cannot be removed")
        del self._keys[kek_id]
