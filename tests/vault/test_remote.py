"""``vault.remote.WrappedKeyRing`` over an in-memory root key (the real OpenBao and KMS wrappers have their
own tests against real servers; the gateway runs the ring over OpenBao end to end in ``tests/e2e``)."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mcp_bastion.errors import ConfigError, Unavailable
from mcp_bastion.vault.envelope import InvalidCiphertext, Vault
from mcp_bastion.vault.kek import UnknownKeyVersion
from mcp_bastion.vault.remote import WrappedKeyRing

pytestmark = pytest.mark.anyio


class RootKey:
    """A KeyWrapper in memory: AES-GCM with the KEK id as associated data, versioned like Transit."""

    def __init__(self, name: str = "memory:root") -> None:
        self.name = name
        self.versions = [AESGCM(os.urandom(32))]
        self.min_version = 1
        self.down = False
        self.unwraps = 0

    async def prepare(self) -> None:
        self._check()

    def _check(self) -> None:
        if self.down:
            raise Unavailable(f"{self.name} unreachable")

    async def generate(self, kek_id: str) -> tuple[bytes, bytes]:
        self._check()
        key = os.urandom(32)
        return key, self._wrap(key, kek_id)

    def _wrap(self, key: bytes, kek_id: str) -> bytes:
        nonce = os.urandom(12)
        version = len(self.versions)
        return bytes([version]) + nonce + self.versions[-1].encrypt(nonce, key, kek_id.encode())

    async def unwrap(self, wrapped: bytes, kek_id: str) -> bytes:
        self._check()
        self.unwraps += 1
        version = wrapped[0]
        if not self.min_version <= version <= len(self.versions):
            raise InvalidCiphertext()
        try:
            return self.versions[version - 1].decrypt(wrapped[1:13], wrapped[13:], kek_id.encode())
        except Exception:
            raise InvalidCiphertext() from None

    async def rewrap(self, wrapped: bytes, kek_id: str) -> bytes:
        return self._wrap(await self.unwrap(wrapped, kek_id), kek_id)

    def rotate(self) -> None:
        self.versions.append(AESGCM(os.urandom(32)))

    async def aclose(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def ring(path: Path, root: RootKey, clock: Clock | None = None) -> WrappedKeyRing:
    keys = WrappedKeyRing(root, path, refresh_interval=10, max_stale=60, monotonic=clock or Clock())
    await keys.load()
    return keys


async def test_the_file_holds_only_wrapped_keys_and_a_restart_opens_old_secrets(tmp_path: Path) -> None:
    root, path = RootKey(), tmp_path / "vault-keys.json"
    first = await ring(path, root)
    blob = Vault(first).seal(b"upstream token", owner="alice", purpose="token")
    assert path.stat().st_mode & 0o077 == 0
    document = orjson.loads(path.read_bytes())
    assert document["backend"] == "memory:root"
    assert first.current.key.hex() not in path.read_text()  # wrapped, never the key itself
    again = await ring(path, root)
    assert Vault(again).open(blob, owner="alice", purpose="token") == b"upstream token"


async def test_rotation_adds_a_current_version_and_old_blobs_still_open(tmp_path: Path) -> None:
    root = RootKey()
    keys = await ring(tmp_path / "k.json", root)
    vault = Vault(keys)
    old = vault.seal(b"s", owner="o", purpose="p")
    new_kek = await keys.rotate()
    assert keys.current.id == new_kek.id == "remote-2"
    assert Vault.kek_id_of(vault.seal(b"s", owner="o", purpose="p")) == "remote-2"
    assert vault.open(old, owner="o", purpose="p") == b"s"
    assert [v.id for v in keys.versions] == ["remote-1", "remote-2"]


async def test_a_remote_that_stays_down_makes_the_vault_refuse(tmp_path: Path) -> None:
    root, clock = RootKey(), Clock()
    keys = await ring(tmp_path / "k.json", root, clock)
    vault = Vault(keys)
    blob = vault.seal(b"s", owner="o", purpose="p")
    root.down = True
    with pytest.raises(Unavailable):
        await keys.refresh()
    clock.now += 59  # still within max_stale: the keys in memory serve
    assert vault.open(blob, owner="o", purpose="p") == b"s"
    clock.now += 2
    with pytest.raises(Unavailable):  # not InvalidCiphertext, and never a plaintext fallback
        vault.open(blob, owner="o", purpose="p")
    with pytest.raises(Unavailable):
        vault.seal(b"s", owner="o", purpose="p")
    root.down = False
    await keys.refresh()
    assert vault.open(blob, owner="o", purpose="p") == b"s"


async def test_the_remote_is_needed_to_start(tmp_path: Path) -> None:
    root = RootKey()
    await ring(tmp_path / "k.json", root)
    root.down = True
    with pytest.raises(Unavailable):
        await ring(tmp_path / "k.json", root)


async def test_another_root_key_is_refused_clearly(tmp_path: Path) -> None:
    await ring(tmp_path / "k.json", RootKey("memory:one"))
    with pytest.raises(ConfigError, match="belongs to 'memory:one'"):
        await ring(tmp_path / "k.json", RootKey("memory:two"))


async def test_a_wrapped_kek_moved_to_another_id_does_not_unwrap(tmp_path: Path) -> None:
    root, path = RootKey(), tmp_path / "k.json"
    keys = await ring(path, root)
    await keys.rotate()
    document = orjson.loads(path.read_bytes())
    first, second = document["keys"]
    first["wrapped"], second["wrapped"] = second["wrapped"], first["wrapped"]  # swap the wrapped keys
    path.write_bytes(orjson.dumps(document))
    with pytest.raises(Unavailable, match="does not unwrap"):
        await keys.refresh()


async def test_root_rotation_rewrap_and_retiring_old_root_versions(tmp_path: Path) -> None:
    root = RootKey()
    keys = await ring(tmp_path / "k.json", root)
    vault = Vault(keys)
    blob = vault.seal(b"s", owner="o", purpose="p")
    root.rotate()
    assert await keys.rewrap_root() == 1
    root.min_version = 2  # the old root version is retired: only re-wrapped KEKs still unwrap
    await keys.refresh()
    assert vault.open(blob, owner="o", purpose="p") == b"s"


async def test_a_version_the_root_refuses_is_left_out(tmp_path: Path) -> None:
    root = RootKey()
    keys = await ring(tmp_path / "k.json", root)
    vault = Vault(keys)
    old = vault.seal(b"s", owner="o", purpose="p")
    root.rotate()
    await keys.rotate()  # remote-2 wrapped by root version 2; remote-1 still by version 1
    root.min_version = 2  # retired without re-wrapping first: remote-1 is lost
    await keys.refresh()
    with pytest.raises(InvalidCiphertext):
        vault.open(old, owner="o", purpose="p")
    with pytest.raises(UnknownKeyVersion):
        keys.get("remote-1")
