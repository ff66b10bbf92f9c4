"""The sandbox profile of one stdio upstream: ``[upstreams.<name>.sandbox]`` (or ``sandbox = "strict"``).

Strict is the default for every stdio upstream: namespaces (bubblewrap), seccomp, Landlock, rlimits, no
network. ``mode = "dangerously_disabled"`` runs the server with the gateway's own rights (a WARNING at every
start names it). What a profile can open up is listed here and nothing else: extra read-only paths, one
writable data directory, egress through the gateway's proxy to named ``host:port`` pairs, larger limits.

    [upstreams.files.sandbox]
    read_only = ["/srv/docs"]
    data_dir = "files"               # relative: under <state_dir>/sandbox/, created 0700
    network = "proxy"                # "none" (default) or "proxy"
    egress = ["api.github.com:443"]
    egress_allowed_networks = []     # weakening: private CIDRs the proxy may reach (internal APIs)
    memory_mb = 1024
    call_timeout_seconds = 30
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SandboxMode = Literal["strict", "dangerously_disabled"]
NetworkMode = Literal["none", "proxy"]

PROXY_PORT: Final = 3128
"""Loopback port, inside the sandbox's own network namespace, where the forwarder listens."""

PROXY_SOCKET: Final = "/run/egress.sock"
"""Where the gateway's egress proxy socket appears inside the sandbox."""


class SandboxSettings(BaseModel):
    """How one stdio upstream is confined; secure by default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: SandboxMode = "strict"
    """``dangerously_disabled`` runs the server unconfined, with the gateway's rights (logged at every start)."""
    read_only: tuple[Path, ...] = ()
    """Extra absolute paths the server may read (bound read-only at the same path)."""
    data_dir: Path | None = None
    """The server's one writable directory (same path inside); relative: under ``<state_dir>/sandbox/``."""
    network: NetworkMode = "none"
    """``none``: loopback only, in its own namespace. ``proxy``: HTTP(S) through the gateway's egress proxy."""
    egress: tuple[str, ...] = ()
    """``host:port`` pairs the egress proxy lets this server reach (``network = "proxy"`` only)."""
    egress_allowed_networks: tuple[str, ...] = ()
    """Weakening: CIDRs the proxy may connect to although private, loopback or link-local (an internal API).
    Empty (default): allowed names must resolve to public addresses. Logged at every start."""
    memory_mb: int = Field(512, ge=16, le=1 << 20)
    """Address-space limit (RLIMIT_AS) of each process of the server."""
    cpu_seconds: int = Field(60, ge=1, le=86400)
    """CPU time limit (RLIMIT_CPU): past it the kernel kills the server (the supervisor restarts it)."""
    processes: int = Field(64, ge=1, le=65536)
    """Processes and threads (pids cgroup, or RLIMIT_NPROC when not root)."""
    open_files: int = Field(256, ge=16, le=1 << 20)
    file_size_mb: int = Field(64, ge=0, le=1 << 20)
    """Largest file the server may write (RLIMIT_FSIZE)."""
    call_timeout_seconds: float = Field(120.0, gt=0, le=3600)
    """Wall-clock budget of one request: past it the caller gets a timeout and the child is killed."""

    @model_validator(mode="before")
    @classmethod
    def _mode_alone(cls, data: Any) -> Any:
        # ``sandbox = "strict"`` is short for ``[sandbox] mode = "strict"``.
        return {"mode": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _consistent(self) -> SandboxSettings:
        for path in self.read_only:
            if not path.is_absolute():
                raise ValueError(f"read_only paths must be absolute, got {str(path)!r}")
        if self.egress and self.network != "proxy":
            raise ValueError('egress needs network = "proxy"')
        if self.egress_allowed_networks and self.network != "proxy":
            raise ValueError('egress_allowed_networks needs network = "proxy"')
        for cidr in self.egress_allowed_networks:
            ipaddress.ip_network(cidr)  # ValueError names the bad entry
        if self.network == "proxy" and not self.egress:
            raise ValueError('network = "proxy" needs egress (the host:port pairs the server may reach)')
        for target in self.egress:
            host, sep, port = target.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"egress entries are host:port, got {target!r}")
        return self

    @property
    def strict(self) -> bool:
        return self.mode == "strict"

    def resolved_data_dir(self, state_dir: Path) -> Path | None:
        """The absolute data directory (a relative one lives under ``<state_dir>/sandbox/``)."""
        if self.data_dir is None:
            return None
        if self.data_dir.is_absolute():
            return self.data_dir
        return (state_dir / "sandbox" / self.data_dir).absolute()
