"""One upstream's sandbox, ready to wrap each child it spawns (``upstream.process.ChildProcess.spawn``).

``Sandbox.check()`` runs once at startup and fails closed: without bubblewrap, user namespaces or seccomp
the upstream does not start (``ConfigError`` naming what is missing and how to install it). A missing or
old Landlock only weakens the second layer: it is logged as a WARNING naming the missing protection, as is
a process limit the machine cannot enforce. ``Sandbox.prepare()`` turns a command into a ``Launch``:
the bwrap argv with its data fds (seccomp BPF, synthetic passwd), the environment, and the pids cgroup the
child joins between fork and exec.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mcp_bastion.errors import ConfigError
from mcp_bastion.sandbox import bwrap, seccomp
from mcp_bastion.sandbox.cgroup import PidsGroup
from mcp_bastion.sandbox.check import Report, probe
from mcp_bastion.sandbox.profile import SandboxSettings

logger = logging.getLogger("mcp_bastion.sandbox")


class EgressSocket(Protocol):
    """What the sandbox needs of the egress proxy (``sandbox.egress.EgressProxy``)."""

    async def start(self) -> None: ...
    def socket_path(self) -> Path: ...
    async def aclose(self) -> None: ...


@dataclass(slots=True)
class Launch:
    """One sandboxed spawn: run ``argv`` with ``env``, keeping ``pass_fds`` open (no ``preexec_fn``: the
    child joins its pids group itself); ``close_fds()`` in the parent once spawned, ``cleanup()`` once the
    child is gone."""

    argv: list[str]
    env: dict[str, str]
    pass_fds: tuple[int, ...]
    group: PidsGroup | None

    def close_fds(self) -> None:
        """Close the parent's copies (once: a number closed twice may meanwhile belong to a socket)."""
        fds, self.pass_fds = self.pass_fds, ()
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    def cleanup(self) -> None:
        self.close_fds()
        if self.group is not None:
            self.group.remove()


class Sandbox:
    """The strict profile of one stdio upstream."""

    def __init__(
        self,
        name: str,
        profile: SandboxSettings,
        *,
        state_dir: Path,
        egress: EgressSocket | None = None,
        where: str | None = None,
    ) -> None:
        self.name = name
        self.where = where if where is not None else f"upstreams.{name}"
        """What messages name: the upstream's settings, or the profile ``sandbox run`` was given."""
        self.profile = profile
        self.state_dir = state_dir.absolute()
        self.egress = egress
        self._landlock = True
        self._cgroup = False

    async def check(self, report: Report | None = None) -> list[str]:
        """Fail closed (``ConfigError``) unless the machine can run this profile; return the warnings."""
        report = report if report is not None else probe()
        missing = report.missing_for_strict()
        if missing:
            setting = f"{self.where}.sandbox" if self.where.startswith("upstreams.") else "the upstream's sandbox"
            raise ConfigError(
                f"{self.where}: the sandbox cannot start: {'; '.join(missing)}. Install what is missing "
                f"(apt-get install -y bubblewrap), or run `mcp-bastion sandbox check`; only if you accept running "
                f'the server with the gateway\'s rights, set {setting} = "dangerously_disabled"'
            )
        warnings = [f"{self.where}: sandbox without {gap}" for gap in report.landlock_gaps(self.profile)]
        self._landlock = report.landlock_abi >= 1
        self._cgroup = report.pids_cgroup
        if not report.nproc_enforced and not report.pids_cgroup:
            warnings.append(
                f"{self.where}: sandbox without a process limit (running as root, and no writable pids "
                "cgroup): a fork bomb is contained only by the PID namespace"
            )
        data_dir = self.profile.resolved_data_dir(self.state_dir)
        if data_dir is not None:
            if not self.profile.data_dir or not self.profile.data_dir.is_absolute():
                (self.state_dir / "sandbox").mkdir(mode=0o700, parents=True, exist_ok=True)
            data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.profile.network == "proxy":
            if self.egress is None:
                raise ConfigError(f'{self.where}: network = "proxy" but no egress proxy is available')
            await self.egress.start()
        for warning in warnings:
            logger.warning("%s", warning)
        return warnings

    async def aclose(self) -> None:
        if self.egress is not None and self.profile.network == "proxy":
            await self.egress.aclose()

    def plan(
        self, command: Sequence[str], env: Mapping[str, str], cwd: Path | None, *, join_group: bool = False
    ) -> bwrap.Plan:
        socket = self.egress.socket_path() if self.egress is not None and self.profile.network == "proxy" else None
        return bwrap.build_plan(
            self.name,
            command,
            env=env,
            cwd=cwd,
            profile=self.profile,
            state_dir=self.state_dir,
            egress_socket=socket,
            landlock=self._landlock,
            join_group=join_group,
        )

    def prepare(self, command: Sequence[str], env: Mapping[str, str], cwd: Path | None) -> Launch:
        """The spawn of ``command`` in this sandbox (``env``: the server's whole environment, PATH included)."""
        fds: dict[str, int] = {}
        group: PidsGroup | None = None
        try:
            if self._cgroup:
                group = PidsGroup.create(self.name, self.profile.processes)
            plan = self.plan(command, env, cwd, join_group=group is not None)
            fds["seccomp"] = seccomp.memfd("seccomp", seccomp.bpf_program(self.profile.families))
            for key, data in plan.data.items():
                fds[key] = seccomp.memfd(key, data)
            if group is not None:
                fds["cgroup"] = group.open_procs()
        except BaseException:
            for fd in fds.values():
                os.close(fd)
            if group is not None:
                group.remove()
            raise
        argv = bwrap.with_fds(plan.argv, fds)
        return Launch(argv, plan.env, tuple(fds.values()), group)
