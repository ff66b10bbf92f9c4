"""``upstreams.<name>.auth`` with ``mode = "static"``: the header an upstream request carries for a user.

Two sources, never mixed: the user's own secret from the vault (``mcp-bastion credentials set``), or, when
the operator names one, a ``shared_service_account`` — one secret for every user, which is exactly the
confused deputy this gateway exists to avoid, so it must be named for what it is and is logged as such at
every start.

Invariants:
- a user without a stored credential is refused (``CredentialMissing``, a JSON-RPC error saying whom to
  ask) — never sent upstream without one, never given someone else's;
- the plaintext lives in the header list of one request only; it is never logged or put in an error.
"""

from __future__ import annotations

from typing import Final, Protocol, final

from mcp_bastion.delegation.store import CredentialStore
from mcp_bastion.errors import CredentialMissing, Unavailable
from mcp_bastion.exchange import Principal
from mcp_bastion.vault.envelope import InvalidCiphertext

Header = tuple[bytes, bytes]
MAX_SECRET_BYTES: Final = 8192


class UpstreamAuth(Protocol):
    """What an upstream channel adds to each request for its principal."""

    async def headers(self, principal: Principal) -> list[Header]: ...

    async def aclose(self) -> None: ...


@final
class NoAuth:
    """The upstream gets no credential (it authenticates nobody, or trusts its network)."""

    async def headers(self, principal: Principal) -> list[Header]:
        return []

    async def aclose(self) -> None:
        pass


def _header(name: str, scheme: str, secret: bytes) -> Header:
    if not secret or len(secret) > MAX_SECRET_BYTES or any(byte < 0x20 or byte == 0x7F for byte in secret):
        # A header value with CR/LF would split the request; refuse rather than "clean" a secret.
        raise Unavailable("stored upstream credential is not a usable header value")
    value = (scheme.encode("ascii") + b" " + secret) if scheme else secret
    return (name.lower().encode("ascii"), value)


@final
class SharedServiceAccount:
    """One secret for every user (``shared_service_account``)."""

    def __init__(self, secret: str, *, header: str, scheme: str) -> None:
        self._header = _header(header, scheme, secret.encode("utf-8"))

    def __repr__(self) -> str:
        return "SharedServiceAccount()"

    async def headers(self, principal: Principal) -> list[Header]:
        return [self._header]

    async def aclose(self) -> None:
        pass


@final
class PerUserSecret:
    """Each user's own secret for this upstream, from the vault."""

    def __init__(self, store: CredentialStore, upstream: str, *, header: str, scheme: str) -> None:
        self._store = store
        self._upstream = upstream
        self._name = header
        self._scheme = scheme

    async def headers(self, principal: Principal) -> list[Header]:
        try:
            secret = await self._store.secret_for(self._upstream, principal.key)
        except InvalidCiphertext:
            # Moved from another row or tampered with: refused like a missing one, and never used.
            raise CredentialMissing(
                f"{self._upstream}: stored credential does not open", reason="upstream_credential_invalid"
            ) from None
        if secret is None:
            raise CredentialMissing(f"{self._upstream}: no credential for {principal.subject}")
        return [_header(self._name, self._scheme, secret)]

    async def aclose(self) -> None:
        pass
