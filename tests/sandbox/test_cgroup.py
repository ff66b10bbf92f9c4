"""The pids cgroups of sandboxed children: leftovers of a gateway that was killed are swept, nothing else."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcp_bastion.sandbox.cgroup import pids_root, sweep

ROOT = pids_root()
pytestmark = pytest.mark.skipif(ROOT is None, reason="no writable pids cgroup hierarchy here")


@pytest.fixture
def base() -> Iterator[Path]:
    assert ROOT is not None
    path = ROOT / f"mcp-bastion-test-{os.getpid()}"
    path.mkdir()
    yield path
    for group in path.iterdir():
        if group.is_dir():
            group.rmdir()
    path.rmdir()


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_only_empty_groups_of_gone_gateways_are_removed(base: Path) -> None:
    gone = base / f"files-{dead_pid()}-3"
    mine = base / f"files-{os.getpid()}-1"
    other = base / "someone-elses"
    for group in (gone, mine, other):
        group.mkdir()
    assert sweep(base) == [gone.name]
    assert not gone.exists()
    assert mine.exists()
    assert other.exists()


def test_a_group_with_members_survives_until_they_are_gone(base: Path) -> None:
    # The creator is gone but a member lives on (say, a child that escaped its session): rmdir refuses.
    group = base / f"files-{dead_pid()}-1"
    group.mkdir()
    member = subprocess.Popen(["sleep", "30"])
    try:
        (group / "cgroup.procs").write_text(str(member.pid))
        assert sweep(base) == []
        assert group.exists()
    finally:
        member.kill()
        member.wait()
    assert sweep(base) == [group.name]
