"""Cheap argon2id parameters for tests (the real ones cost ~180 ms per hash), and a spy on verification."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from mcp_bastion.identity.passwords import HashParameters, Passwords

FAST = HashParameters(time_cost=1, memory_cost=8, parallelism=1)
OLD = HashParameters(time_cost=1, memory_cost=16, parallelism=1)
"""Different parameters: hashes made with these need a re-hash under ``FAST``."""


@dataclass
class VerifySpy:
    """Every argon2id verification, as (hash, was it the dummy)."""

    calls: list[tuple[str, bool]] = field(default_factory=list)

    @property
    def dummies(self) -> int:
        return sum(1 for _, dummy in self.calls if dummy)

    @property
    def real(self) -> int:
        return sum(1 for _, dummy in self.calls if not dummy)


def spy_on(monkeypatch: pytest.MonkeyPatch) -> VerifySpy:
    spy = VerifySpy()
    original_matches = Passwords._matches
    original_dummy = Passwords.dummy_verify
    in_dummy = False

    def matches(self: Passwords, password_hash: str, password: str) -> bool:
        spy.calls.append((password_hash, in_dummy))
        return original_matches(self, password_hash, password)

    async def dummy_verify(self: Passwords, password: str) -> None:
        nonlocal in_dummy
        in_dummy = True
        try:
            await original_dummy(self, password)
        finally:
            in_dummy = False

    monkeypatch.setattr(Passwords, "_matches", matches)
    monkeypatch.setattr(Passwords, "dummy_verify", dummy_verify)
    return spy
