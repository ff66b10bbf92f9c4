"""What the authorization server signs access tokens with: the ``TokenSigner`` protocol.

Two implementations: ``signingkeys.SigningKeyRing`` (the gateway's: keys sealed in the database, rotated)
and ``localissuer.LocalIssuer`` (one key in a private file: the resource side without the authorization
server, and the unit tests of the server's core).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol, final

from mcp_bastion.oauth.jwks import KeySet, PublicKey


class TokenSigner(Protocol):
    """Mints RFC 9068 access tokens for one issuer and publishes the keys they may be signed with."""

    @property
    def issuer(self) -> str: ...

    @property
    def kid(self) -> str: ...

    def public_keys(self) -> KeySet: ...

    def mint(
        self,
        subject: str,
        audience: str,
        *,
        scope: Iterable[str] = (),
        lifetime: int = 300,
        client_id: str = "demo",
        now: float | None = None,
        extra: Mapping[str, object] | None = None,
    ) -> str: ...


@final
class SignerKeys:
    """``jwks.KeySource`` over a signer's published keys, read at every lookup (so it follows rotations)."""

    __slots__ = ("_signer",)

    def __init__(self, signer: TokenSigner) -> None:
        self._signer = signer

    async def key_for(self, kid: str | None) -> PublicKey | None:
        return self._signer.public_keys().get(kid)
