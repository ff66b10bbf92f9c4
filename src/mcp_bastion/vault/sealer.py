"""The vault behind ``oauth.sealing.Sealer``: the authorization server's grace-window refresh pairs, sealed
with a per-record data key under the vault's KEK instead of a key that lives only in process memory.

Each blob is bound to a fixed owner and purpose plus the server's own associated data (family id and
token digest), so a pair cannot be replayed into another family. The vault's opaque ``InvalidCiphertext``
becomes the protocol's equally opaque ``Unsealable``.
"""

from __future__ import annotations

from typing import Final, final

from mcp_bastion.oauth.sealing import Unsealable
from mcp_bastion.vault.envelope import InvalidCiphertext, Vault

OWNER: Final = "authorization-server"
PURPOSE: Final = "refresh-grace-pair"


@final
class VaultSealer:
    """``oauth.sealing.Sealer`` over a ``Vault``."""

    __slots__ = ("_owner", "_purpose", "_vault")

    def __init__(self, vault: Vault, *, owner: str = OWNER, purpose: str = PURPOSE) -> None:
        self._vault = vault
        self._owner = owner
        self._purpose = purpose

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        return self._vault.seal(plaintext, owner=self._owner, purpose=self._purpose, context=aad)

    def open(self, ciphertext: bytes, aad: bytes) -> bytes:
        try:
            return self._vault.open(ciphertext, owner=self._owner, purpose=self._purpose, context=aad)
        except InvalidCiphertext:
            raise Unsealable("authentication failed") from None
