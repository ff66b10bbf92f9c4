"""Revocation answers cached for a moment, so checking revocation on every MCP call costs microseconds.

Asking the store on every call costs ~1 ms (an async database round trip), twice the gateway's whole
per-call budget. So a "not revoked" answer for a (jti, family) is remembered for ``ttl`` seconds:

- revocations made by this process (token revocation, refresh reuse, code replay, consent withdrawn)
  clear the cache at once: ``RevokingStore`` wraps the store and invalidates after every revoking write;
- revocations made elsewhere (another replica, the ``mcp-bastion users disable`` command) take effect within
  ``ttl`` seconds;
- a "revoked" answer is never cached as "not revoked", and a store error propagates (the verifier turns it
  into 503: fail closed).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

from mcp_bastion.oauth.access_token import AccessClaims, RevocationCheck

DEFAULT_TTL_SECONDS: Final = 1.0
"""Longest a revocation made by another process may take to be enforced here."""
MAX_ENTRIES: Final = 100_000


class RevocationCache:
    """A ``RevocationCheck`` remembering negative answers for ``ttl`` seconds."""

    def __init__(
        self,
        check: RevocationCheck | None = None,
        *,
        ttl: float = DEFAULT_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self.check = check
        """The authoritative check (the authorization server); set once it exists."""
        self._ttl = ttl
        self._clock = clock
        self._max = max_entries
        self._clear: dict[tuple[str, str | None, object], float] = {}
        """(issuer, jti, family) -> until when "not revoked" holds."""

    async def is_revoked(self, claims: AccessClaims) -> bool:
        key = (claims.issuer, claims.jwt_id, claims.raw.get("sid"))
        now = self._clock()
        until = self._clear.get(key)
        if until is not None and until > now:
            return False
        if self.check is None:
            raise RuntimeError("RevocationCache used before its check was set")
        revoked = await self.check.is_revoked(claims)
        if revoked:
            self._clear.pop(key, None)
        else:
            if len(self._clear) >= self._max:
                self._clear.clear()  # bounded memory; the next calls simply ask the store again
            self._clear[key] = now + self._ttl
        return revoked

    def invalidate(self) -> None:
        """Forget every cached answer (something was just revoked)."""
        self._clear.clear()


REVOKING_METHODS: Final = frozenset(
    {"revoke_family", "revoke_families", "revoke_all_families", "revoke_access_token", "rotate_refresh", "consume_code"}
)
"""Store writes that can revoke a token or a family (rotation and code consumption revoke on reuse)."""


class RevokingStore:
    """Wraps an ``OAuthStore``: after any write that may revoke, the revocation cache is cleared."""

    def __init__(self, store: Any, cache: RevocationCache) -> None:
        self._store = store
        self._cache = cache

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if name not in REVOKING_METHODS:
            return attribute

        async def revoking(*args: Any, **kwargs: Any) -> Any:
            try:
                return await attribute(*args, **kwargs)
            finally:
                self._cache.invalidate()

        return revoking
