"""What this machine can enforce: ``mcp-bastion sandbox check`` and the startup check of strict profiles.

Each protection is probed for real where that is cheap (bwrap runs ``true`` in fresh namespaces; the
seccomp filter is compiled), and read from the kernel otherwise (Landlock ABI, cgroups).

There is no nftables row: a sandbox's network namespace has no interface but loopback, so there is
nothing to filter; its one way out is the egress proxy's Unix socket (``sandbox/egress.py``).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass, field

from mcp_bastion.sandbox.cgroup import pids_root
from mcp_bastion.sandbox.profile import SandboxSettings
from mcp_bastion.sandbox.seccomp import seccomp_available

INSTALL_BWRAP = "bubblewrap is not installed (apt-get install -y bubblewrap)"


@dataclass(frozen=True, slots=True)
class Report:
    bwrap: str | None
    """Path of bwrap, None when absent."""
    namespaces: str | None
    """None when bwrap could create user, PID, IPC, UTS, network and cgroup namespaces; else the error."""
    seccomp: str | None
    """None when a filter compiles and the kernel has seccomp; else why not."""
    landlock_abi: int
    pids_cgroup: bool
    nproc_enforced: bool
    """RLIMIT_NPROC holds (not for the real root user)."""
    notes: list[str] = field(default_factory=list)

    def missing_for_strict(self) -> list[str]:
        missing = []
        if self.bwrap is None:
            missing.append(INSTALL_BWRAP)
        elif self.namespaces is not None:
            missing.append(
                f"bwrap cannot create namespaces ({self.namespaces}); unprivileged user namespaces may be disabled "
                "(sysctl kernel.unprivileged_userns_clone=1, or kernel.apparmor_restrict_unprivileged_userns=0)"
            )
        if self.seccomp is not None:
            missing.append(f"seccomp: {self.seccomp} (apt-get install -y libseccomp2)")
        return missing

    def landlock_gaps(self, profile: SandboxSettings) -> list[str]:
        if self.landlock_abi < 1:
            return ["Landlock (kernel ≥ 5.13): the second filesystem layer is missing"]
        gaps = []
        if self.landlock_abi < 4:
            gaps.append("Landlock TCP rules (ABI 4, kernel ≥ 6.7): connect() is limited by the namespace only")
        if self.landlock_abi < 6:
            gaps.append("Landlock scoping (ABI 6, kernel ≥ 6.12): signals and abstract sockets are not scoped")
        return gaps

    def lines(self) -> list[tuple[bool, str, str]]:
        """(ok, protection, detail) rows for the CLI."""
        limit = "none (root, no cgroup)"
        if self.pids_cgroup or self.nproc_enforced:
            limit = "pids cgroup" if self.pids_cgroup else "RLIMIT_NPROC"
        return [
            (self.bwrap is not None, "bubblewrap", self.bwrap or INSTALL_BWRAP),
            (self.namespaces is None, "namespaces (user, pid, ipc, uts, net, cgroup)", self.namespaces or "ok"),
            (self.seccomp is None, "seccomp filter", self.seccomp or "ok (libseccomp via pyseccomp)"),
            (self.landlock_abi >= 4, "Landlock", f"ABI {self.landlock_abi}" if self.landlock_abi else "unavailable"),
            (self.pids_cgroup or self.nproc_enforced, "process limit", limit),
        ]

    @property
    def strict_ok(self) -> bool:
        return not self.missing_for_strict()


def _namespaces(path: str) -> str | None:
    try:
        done = subprocess.run(  # noqa: S603
            [path, "--unshare-all", "--unshare-user", "--die-with-parent", "--ro-bind", "/", "/", "true"],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if done.returncode != 0:
        return done.stderr.decode(errors="replace").strip() or f"exit status {done.returncode}"
    return None


def _landlock_abi() -> int:
    try:
        import landlockpy

        return landlockpy.abi_version()
    except (ImportError, OSError):
        return 0


@functools.cache
def probe() -> Report:
    """Probe the machine (cached for the process: it does not change while the gateway runs)."""
    path = shutil.which("bwrap")
    return Report(
        bwrap=path,
        namespaces=_namespaces(path) if path is not None else "bwrap missing",
        seccomp=seccomp_available(),
        landlock_abi=_landlock_abi(),
        pids_cgroup=pids_root() is not None,
        nproc_enforced=os.getuid() != 0,
    )
