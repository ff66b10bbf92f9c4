"""Private files: 0600 from the first byte, atomic, and refused when loose, linked or not regular."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mcp_bastion.errors import ConfigError
from mcp_bastion.privatefile import check_private, read_private, write_atomic


def test_written_private_under_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = tmp_path / "key"
        assert write_atomic(path, b"secret")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_private(path, "key", max_bytes=100) == b"secret"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_keep_existing_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "key"
    write_atomic(path, b"first")
    assert write_atomic(path, b"second", keep_existing=True) is False
    assert path.read_bytes() == b"first"
    write_atomic(path, b"third")
    assert path.read_bytes() == b"third"


@pytest.mark.parametrize("case", ["group-readable", "symlink", "directory", "too-big", "missing"])
def test_refused(tmp_path: Path, case: str) -> None:
    path = tmp_path / "key"
    write_atomic(path, b"x" * 10)
    target = path
    if case == "group-readable":
        path.chmod(0o640)
    elif case == "symlink":
        target = tmp_path / "link"
        target.symlink_to(path)
    elif case == "directory":
        target = tmp_path / "dir"
        target.mkdir(mode=0o700)
    elif case == "missing":
        target = tmp_path / "nope"
    with pytest.raises(ConfigError):
        read_private(target, "key", max_bytes=5 if case == "too-big" else 100)
    if case != "too-big":
        with pytest.raises(ConfigError):
            check_private(target, "key")
