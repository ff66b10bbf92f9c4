"""The seam to a remote root key (OpenBao/Vault Transit, AWS KMS): it wraps and unwraps our KEK versions.

The vault never sends secrets to the remote service, only KEKs: each KEK version is a random 256-bit key
kept *wrapped* by the remote root key (in ``vault-keys.json`` beside the database) and unwrapped into
memory when the gateway starts and again every few minutes (``remote.WrappedKeyRing``). So the request
path never waits on the network, and a remote that stays down makes the vault refuse (``Unavailable``)
once the unwrapped keys are too old, never fall back to anything stored in plaintext.

Every call binds the KEK to its id (Transit ``context`` / KMS ``EncryptionContext``): a wrapped KEK copied
under another id does not unwrap.

Invariants for implementations:
- ``unwrap`` of anything that does not authenticate raises ``InvalidCiphertext`` (from ``vault.envelope``);
  a remote that cannot be reached, refuses us, or times out raises ``Unavailable`` with a clear detail
  that names the service and never contains key material or credentials;
- keys and credentials never appear in ``repr``, logs or exceptions;
- calls are bounded in time (``timeout`` seconds).
"""

from __future__ import annotations

from typing import Protocol


class KeyWrapper(Protocol):
    """A remote root key that wraps 32-byte KEKs."""

    @property
    def name(self) -> str:
        """Where the root key lives, for status output and errors, e.g. ``openbao-transit:mcp-bastion``."""
        ...

    async def prepare(self) -> None:
        """Check (and where the backend allows, create) the root key before first use: OpenBao makes sure
        the Transit key exists and derives per-context keys, so the KEK-id binding actually holds."""
        ...

    async def generate(self, kek_id: str) -> tuple[bytes, bytes]:
        """A new random 32-byte KEK and its wrapped form (Transit ``datakey``, KMS ``GenerateDataKey``)."""
        ...

    async def unwrap(self, wrapped: bytes, kek_id: str) -> bytes:
        """The 32-byte KEK; ``InvalidCiphertext`` if ``wrapped`` is not a KEK wrapped for ``kek_id``."""
        ...

    async def rewrap(self, wrapped: bytes, kek_id: str) -> bytes:
        """The same KEK wrapped under the root key's newest version (Transit ``rewrap``, KMS ``ReEncrypt``),
        without the KEK ever leaving the remote service."""
        ...

    async def aclose(self) -> None: ...
