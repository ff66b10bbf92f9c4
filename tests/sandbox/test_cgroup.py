"""The pids cgroups of sandboxed children: leftovers of a gateway that was killed are swept, nothing else."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from mcp_bastion.sandbox.cgroup import pids_root, sweep
from mcp_bastion.sandbox.check import probe
from mcp_bastion.sandbox.launch import Sandbox
from mcp_bastion.sandbox.profile import SandboxSettings

ROOT = pids_root()
pytestmark = pytest.mark.skipif(
    ROOT is None or not probe().strict_ok, reason="no writable pids cgroup hierarchy, or no sandbox, here"
)


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


def test_the_server_runs_in_its_group_without_the_groups_descriptor(tmp_path: Path) -> None:
    # The launcher joins the group and closes the descriptor before the exec: the server is counted, and
    # cannot use cgroup.procs to move anything else in.
    sandbox = Sandbox("cgtest", SandboxSettings(), state_dir=tmp_path)
    anyio.run(sandbox.check)
    launch = sandbox.prepare(["/bin/sh", "-c", "ls /proc/self/fd; grep pids /proc/self/cgroup"], {}, None)
    assert launch.group is not None
    group = launch.group.path
    try:
        done = subprocess.run(launch.argv, env=launch.env, pass_fds=launch.pass_fds, capture_output=True, timeout=30)
    finally:
        launch.cleanup()
    lines = done.stdout.decode().split()
    assert done.returncode == 0, done.stderr
    assert lines[-1].endswith(f"/mcp-bastion/{group.name}")
    assert sorted(lines[:-1]) == ["0", "1", "2", "3"]  # stdio and ls's own /proc/self/fd
    assert not group.exists()
