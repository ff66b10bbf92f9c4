"""Password hashing with argon2id (RFC 9106) via argon2-cffi.

- Parameters are explicit (``HashParameters``), never the library's moving defaults; a stored hash made
  with other parameters still verifies and is flagged by ``needs_rehash`` so the caller can re-hash the
  password it just verified.
- Passwords are NFKC-normalised before hashing (NIST SP 800-63B §5.1.1.2), so the same password typed
  with composed or decomposed accents matches.
- ``dummy_verify`` spends the same work as a real verification against a hash made with the same
  parameters: callers run it for unknown users, so the time taken does not tell which usernames exist.
- Hashing costs ~180 ms of CPU and 64 MiB with the defaults: it runs in worker threads (argon2 releases
  the GIL), at most ``concurrency`` at a time, so logins cannot starve the event loop or exhaust memory.
  Rate limiting (``identity.ratelimit``) keeps attackers from queueing unbounded work.
"""

from __future__ import annotations

import base64
import os
import secrets
import unicodedata
from dataclasses import dataclass
from typing import Final

import anyio
import argon2
import argon2.low_level
from argon2.exceptions import InvalidHashError, VerificationError


class WrongPassword(Exception):
    """The password does not match the hash (or the stored hash is unreadable: the same answer, fail closed)."""


@dataclass(frozen=True, slots=True)
class HashParameters:
    """argon2id cost parameters; the defaults are RFC 9106 §4's second recommendation (64 MiB, t=3, p=4)."""

    time_cost: int = 3
    memory_cost: int = 65536
    """KiB."""
    parallelism: int = 4
    hash_len: int = 32
    salt_len: int = 16


DEFAULT_PARAMETERS: Final = HashParameters()


class Passwords:
    """Hash, verify and re-hash passwords with one set of argon2id parameters."""

    def __init__(self, parameters: HashParameters = DEFAULT_PARAMETERS, *, concurrency: int | None = None) -> None:
        self.parameters = parameters
        self._hasher = argon2.PasswordHasher(
            time_cost=parameters.time_cost,
            memory_cost=parameters.memory_cost,
            parallelism=parameters.parallelism,
            hash_len=parameters.hash_len,
            salt_len=parameters.salt_len,
            type=argon2.Type.ID,
        )
        self._limiter = anyio.CapacityLimiter(concurrency or os.cpu_count() or 1)
        self._dummy_hash = _random_hash(parameters)

    async def hash(self, password: str) -> str:
        """The PHC-format argon2id hash of ``password`` with a fresh random salt."""
        normalised = _normalise(password)
        return await anyio.to_thread.run_sync(self._hasher.hash, normalised, limiter=self._limiter)

    async def verify(self, password_hash: str, password: str) -> None:
        """Return when ``password`` matches ``password_hash``; raise ``WrongPassword`` otherwise."""
        normalised = _normalise(password)
        if not await anyio.to_thread.run_sync(self._matches, password_hash, normalised, limiter=self._limiter):
            raise WrongPassword

    async def dummy_verify(self, password: str) -> None:
        """Spend the work of one verification and discard the result (for users that do not exist)."""
        await anyio.to_thread.run_sync(self._matches, self._dummy_hash, _normalise(password), limiter=self._limiter)

    def needs_rehash(self, password_hash: str) -> bool:
        """True when the hash was made with parameters other than ours (after a verify, re-hash and store)."""
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True

    def _matches(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            # VerifyMismatchError is a VerificationError; a corrupt stored hash denies like a wrong password.
            return False


def _random_hash(parameters: HashParameters) -> str:
    """A well-formed argon2id hash with our parameters whose digest is random bytes: verifying any password
    against it costs exactly a real verification, and no password matches it (creating it costs nothing)."""
    p = parameters
    salt, digest = (base64.b64encode(secrets.token_bytes(n)).rstrip(b"=").decode() for n in (p.salt_len, p.hash_len))
    costs = f"m={p.memory_cost},t={p.time_cost},p={p.parallelism}"
    return f"$argon2id$v={argon2.low_level.ARGON2_VERSION}${costs}${salt}${digest}"


def _normalise(password: str) -> str:
    return unicodedata.normalize("NFKC", password)
