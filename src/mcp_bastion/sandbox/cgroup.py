"""A pids cgroup per sandboxed child: the fork-bomb limit that holds when the gateway runs as root.

RLIMIT_NPROC is not enforced for the real root user (kernel/fork.c exempts INIT_USER), and a user
namespace does not change the real user, so a gateway running as root caps a server's processes with the
pids controller instead: ``<pids hierarchy>/mcp-bastion/<upstream>-<pid>-<n>/pids.max``.

The group is joined from inside the sandbox: the launcher (``sandbox/inner.py``) writes ``0`` to the
group's ``cgroup.procs``, opened here and inherited through bwrap, just before it executes the server, so
nothing the server starts escapes. Not between fork and exec in the gateway (``preexec_fn``): on cgroup v1
a migration waits for an RCU grace period (10-20 ms measured), and ``subprocess`` blocks the gateway's
event loop until the exec, every other request with it. The launcher closes the descriptor before the
exec: the server never holds it.
cgroup v1 (``/sys/fs/cgroup/pids``) and v2 (``/sys/fs/cgroup`` with the pids controller) both work.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
from pathlib import Path
from typing import Final

ROOTS: Final = (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup"))
_counter = itertools.count(1)


def pids_root() -> Path | None:
    """The writable pids hierarchy this process may create groups in, if any."""
    for root in ROOTS:
        own = _own_group(root)
        if own is None:
            continue
        parent = root / own.lstrip("/")
        if root.name == "pids":
            usable = (parent / "cgroup.procs").exists()
        else:
            # cgroup v2: the pids controller must be delegated to the children of our group.
            try:
                usable = "pids" in (parent / "cgroup.subtree_control").read_text().split()
            except OSError:
                usable = False
        if usable and os.access(parent, os.W_OK):
            return parent
    return None


def _own_group(root: Path) -> str | None:
    """This process's group in the hierarchy mounted at ``root`` (from /proc/self/cgroup)."""
    if not root.is_dir():
        return None
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, group = line.split(":", 2)
        if (root.name == "pids" and "pids" in controllers.split(",")) or (root.name == "cgroup" and controllers == ""):
            return group
    return None


def sweep(base: Path) -> list[str]:
    """Remove the empty groups of gateways that are gone; return their names.

    A gateway that is killed (SIGKILL, OOM, a crash) never runs ``remove``; its children die with it
    (``--die-with-parent``) and leave empty groups behind, one per spawn. A group is ``<name>-<pid>-<n>``:
    only groups whose creating pid no longer exists are touched, and ``rmdir`` refuses a group that still
    has members, so a live gateway's (or anyone's) processes are never disturbed.
    """
    removed = []
    for group in base.iterdir():
        parts = group.name.rsplit("-", 2)
        if len(parts) != 3 or not parts[1].isdigit() or not group.is_dir() or _alive(int(parts[1])):
            continue
        with contextlib.suppress(OSError):
            group.rmdir()
            removed.append(group.name)
    return removed


_sweep_once: Final = functools.cache(sweep)
"""At this process's first spawn: earlier gateways' leftovers go before new groups are added."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class PidsGroup:
    """One child's pids group: created before the spawn, joined by the child, removed after it exits."""

    def __init__(self, path: Path, limit: int) -> None:
        path.mkdir(mode=0o700)
        (path / "pids.max").write_text(str(limit))
        self.path = path

    @classmethod
    def create(cls, name: str, limit: int) -> PidsGroup | None:
        root = pids_root()
        if root is None:
            return None
        base = root / "mcp-bastion"
        base.mkdir(mode=0o700, exist_ok=True)
        _sweep_once(base)
        return cls(base / f"{name}-{os.getpid()}-{next(_counter)}", limit)

    def open_procs(self) -> int:
        """``cgroup.procs`` opened for writing, for the child to inherit (``pass_fds``) and join through;
        the caller closes it once the child is spawned."""
        return os.open(self.path / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.rmdir()
