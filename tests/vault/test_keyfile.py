"""The local KEK file: created 0600, refused when loose or malformed, rotated without losing a version."""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest

from mcp_bastion import privatefile
from mcp_bastion.errors import ConfigError
from mcp_bastion.vault import keyfile
from mcp_bastion.vault.envelope import InvalidCiphertext, Vault
from mcp_bastion.vault.kek import KeyEncryptionKeys, UnknownKeyVersion
from mcp_bastion.vault.keyfile import LocalKeyFile


@pytest.fixture
def wide_umask() -> Iterator[None]:
    """Creation must not depend on a careful umask."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def key_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "vault.key"


@pytest.mark.usefixtures("wide_umask")
def test_created_private_on_first_use(tmp_path: Path) -> None:
    path = key_path(tmp_path)
    keys = LocalKeyFile(path, clock=lambda: 1_800_000_000.0)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert keys.current.id == "local-1"
    assert len(keys.current.key) == 32
    assert [(v.id, v.created_at, v.current) for v in keys.versions] == [("local-1", 1_800_000_000.0, True)]
    # A second process opens the same key rather than making another.
    assert LocalKeyFile(path).current == keys.current


def test_two_files_have_different_keys(tmp_path: Path) -> None:
    assert LocalKeyFile(tmp_path / "a.key").current.key != LocalKeyFile(tmp_path / "b.key").current.key


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_refused_when_others_could_read_it(tmp_path: Path, mode: int) -> None:
    path = key_path(tmp_path)
    LocalKeyFile(path)
    path.chmod(mode)
    with pytest.raises(ConfigError, match="must not be readable"):
        LocalKeyFile(path)


def test_refused_through_a_symlink(tmp_path: Path) -> None:
    path = key_path(tmp_path)
    LocalKeyFile(path)
    link = tmp_path / "link.key"
    link.symlink_to(path)
    with pytest.raises(ConfigError):
        LocalKeyFile(link)


def _document(**changes: object) -> bytes:
    key = base64.urlsafe_b64encode(bytes(32)).rstrip(b"=").decode()
    document: dict[str, object] = {
        "format": 1,
        "current": "local-1",
        "keys": [{"id": "local-1", "key": key, "created_at": 1.0}],
    }
    document.update(changes)
    return orjson.dumps(document)


SHORT_KEY = base64.urlsafe_b64encode(bytes(16)).decode()
FULL_KEY = base64.urlsafe_b64encode(bytes(32)).decode()


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"not json", id="not-json"),
        pytest.param(b"[]", id="array"),
        pytest.param(_document(format=2), id="unknown-format"),
        pytest.param(_document(current="local-9"), id="current-not-listed"),
        pytest.param(_document(keys=[]), id="no-keys"),
        pytest.param(_document(extra=1), id="unknown-member"),
        pytest.param(_document(keys=[{"id": "local-1", "key": SHORT_KEY, "created_at": 1}]), id="short-key"),
        pytest.param(_document(keys=[{"id": "local 1", "key": "", "created_at": 1}]), id="bad-id"),
        pytest.param(_document(keys=[{"id": "local-1", "key": "%%%", "created_at": 1}]), id="not-base64"),
        pytest.param(_document(keys=[{"id": "local-1", "key": FULL_KEY, "created_at": True}]), id="created-at-bool"),
        pytest.param(
            _document(
                keys=[
                    {"id": "local-1", "key": base64.urlsafe_b64encode(bytes(32)).decode(), "created_at": 1},
                    {"id": "local-1", "key": base64.urlsafe_b64encode(bytes(32)).decode(), "created_at": 2},
                ]
            ),
            id="duplicate-id",
        ),
    ],
)
def test_malformed_files_are_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "vault.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, content)
    os.close(fd)
    with pytest.raises(ConfigError, match="KEK file") as caught:
        LocalKeyFile(path)
    assert "AAAAAAAAAAAAAAAA" not in caught.value.detail  # key material never in the message


def test_rotate_keeps_old_versions_openable(tmp_path: Path) -> None:
    path = key_path(tmp_path)
    keys = LocalKeyFile(path)
    vault = Vault(keys)
    old = vault.seal(b"secret", owner="o", purpose="p")
    first = keys.current
    rotated = keys.rotate()
    assert rotated.id == "local-2"
    assert keys.current == rotated
    assert rotated.key != first.key
    assert keys.get("local-1") == first.key
    new = vault.seal(b"secret", owner="o", purpose="p")
    assert (Vault.kek_id_of(old), Vault.kek_id_of(new)) == ("local-1", "local-2")
    # After a restart, both still open, and the file is still private.
    reopened = Vault(LocalKeyFile(path))
    assert reopened.open(old, owner="o", purpose="p") == reopened.open(new, owner="o", purpose="p") == b"secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [v.current for v in LocalKeyFile(path).versions] == [False, True]


def test_another_process_rotation_is_seen_on_an_unknown_id(tmp_path: Path) -> None:
    path = key_path(tmp_path)
    gateway, operator = LocalKeyFile(path), LocalKeyFile(path)
    operator.rotate()
    blob = Vault(operator).seal(b"secret", owner="o", purpose="p")
    assert Vault(gateway).open(blob, owner="o", purpose="p") == b"secret"
    assert gateway.current.id == "local-2"


def test_unknown_versions(tmp_path: Path) -> None:
    keys = LocalKeyFile(key_path(tmp_path))
    with pytest.raises(UnknownKeyVersion):
        keys.get("local-7")
    blob = Vault(LocalKeyFile(tmp_path / "other.key")).seal(b"secret", owner="o", purpose="p")
    with pytest.raises(InvalidCiphertext):
        Vault(keys).open(blob, owner="o", purpose="p")


def test_misses_reread_the_file_at_most_once_per_interval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = key_path(tmp_path)
    now = [100.0]
    keys = LocalKeyFile(path, monotonic=lambda: now[0])
    reads: list[Path] = []
    real = privatefile.read_private

    def counting(file: Path, what: str, *, max_bytes: int) -> bytes:
        reads.append(file)
        return real(file, what, max_bytes=max_bytes)

    monkeypatch.setattr(keyfile, "read_private", counting)
    for _ in range(50):  # a flood of blobs naming invented versions
        with pytest.raises(UnknownKeyVersion):
            keys.get("local-7")
    assert len(reads) == 1
    LocalKeyFile(path).rotate()
    with pytest.raises(UnknownKeyVersion):
        keys.get("local-2")  # rotated meanwhile, but the last re-read was less than a second ago
    now[0] += keyfile.RELOAD_INTERVAL_SECONDS
    assert keys.get("local-2") == keys.current.key
    assert keys.get("local-1")  # known versions never cause a read


def test_concurrent_rotations_lose_no_version(tmp_path: Path) -> None:
    path = key_path(tmp_path)
    LocalKeyFile(path)
    handles = [LocalKeyFile(path) for _ in range(4)]

    def rotate_five(keys: LocalKeyFile) -> None:
        for _ in range(5):
            keys.rotate()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(rotate_five, handles))
    final = LocalKeyFile(path)
    assert [v.id for v in final.versions] == [f"local-{n}" for n in range(1, 22)]
    assert final.current.id == "local-21"


def test_is_a_kek_backend(tmp_path: Path) -> None:
    backend: KeyEncryptionKeys = LocalKeyFile(key_path(tmp_path))
    assert backend.get(backend.current.id) == backend.current.key
