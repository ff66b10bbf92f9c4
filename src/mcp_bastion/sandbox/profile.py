"""Sandbox profiles: how one stdio upstream is confined, and the named profiles upstreams select.

Strict is the default for every stdio upstream: namespaces (bubblewrap), seccomp, Landlock, rlimits, no
network. ``mode = "dangerously_disabled"`` runs the server with the gateway's own rights (a WARNING at every
start names it). What a profile can open up is listed here and nothing else: extra read-only paths, one
writable data directory, egress through the gateway's proxy to named ``host:port`` pairs, larger limits.

Profiles are named under ``[sandbox.profiles.<name>]``, each a whole ``SandboxSettings`` (what it leaves
unset is strict's default). An upstream selects one by name, and may override fields on top:

    [sandbox.profiles.web]
    network = "proxy"                # "none" (default) or "proxy"
    egress = ["api.github.com:443"]
    egress_allowed_networks = []     # weakening: private CIDRs the proxy may reach (internal APIs)
    memory_mb = 1024

    [upstreams.github]
    command = ["github-mcp-server", "stdio"]
    sandbox = "web"                  # short form: a built-in or named profile

    [upstreams.files.sandbox]
    profile = "web"                  # the named profile, then these fields replace its own
    read_only = ["/srv/docs"]
    data_dir = "files"               # relative: under <state_dir>/sandbox/, created 0700
    call_timeout_seconds = 30

Two names are built in: ``strict`` (the default) and ``dangerously_disabled``; no profile may take either
name. A named profile is always strict: the only way to run a server unconfined is to write
``dangerously_disabled`` at that upstream, where a reviewer reads it. A table without ``profile`` is a
profile of its own (``mode`` plus fields, on strict's defaults), as before named profiles existed.

Why ``[sandbox.profiles.<name>]`` rather than a top-level ``[sandbox_profiles.<name>]``: it mirrors the
``mcp-bastion sandbox`` command group and gives machine-wide sandbox options one table to live in, without
another top-level key.

The selection is resolved once, when the settings load (``select_profile`` over the raw tables): every
reader sees ``upstream.sandbox`` as one concrete ``SandboxSettings``, and its consistency checks (egress
needs the proxy, ...) run on the named profile with the upstream's overrides applied.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mcp_bastion.errors import ConfigError

SandboxMode = Literal["strict", "dangerously_disabled"]
NetworkMode = Literal["none", "proxy"]
SocketFamily = Literal["unix", "inet", "inet6", "netlink"]

BUILTIN_PROFILES: Final[tuple[str, ...]] = get_args(SandboxMode)
"""Profile names no ``[sandbox.profiles.<name>]`` may take; each is the profile of that ``mode``."""

DEFAULT_PROFILE: Final = "strict"

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
    socket_families: tuple[SocketFamily, ...] | None = None
    """Socket families seccomp lets the server create; every other family, and raw sockets, get EPERM.
    Default: ``unix``, plus ``inet`` with ``network = "proxy"`` (the forwarder). ``inet6``/``netlink`` only
    ever reach the sandbox's own loopback-only namespace, but widen the kernel surface: open them only for a
    server that fails without them."""
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
        if isinstance(data, Unresolved):
            raise ValueError(data.problem)
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
        if self.network == "proxy" and not {"unix", "inet"} <= set(self.families):
            # The forwarder listens on 127.0.0.1 (inet) and reaches the gateway over a Unix socket.
            raise ValueError('network = "proxy" needs socket_families "unix" and "inet"')
        for target in self.egress:
            host, sep, port = target.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"egress entries are host:port, got {target!r}")
        return self

    @property
    def families(self) -> tuple[SocketFamily, ...]:
        """The socket families in force, in a stable order (the seccomp program is cached on it)."""
        default: tuple[SocketFamily, ...] = ("unix", "inet") if self.network == "proxy" else ("unix",)
        chosen = default if self.socket_families is None else self.socket_families
        return tuple(sorted(set(chosen)))

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


ProfileName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]


class SandboxSection(BaseModel):
    """``[sandbox]``: the named profiles upstreams (and ``mcp-bastion sandbox run --profile``) select."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    profiles: Mapping[ProfileName, SandboxSettings] = Field(default_factory=dict)
    """``[sandbox.profiles.<name>]``: each a whole profile; what it leaves unset is strict's default."""

    @field_validator("profiles", mode="before")
    @classmethod
    def _new_names_and_tables(cls, value: Any) -> Any:
        # Before the fields: a redefined built-in is the one error worth reading, whatever the table holds.
        if isinstance(value, Mapping):
            for name, table in value.items():
                if name in BUILTIN_PROFILES:
                    raise ValueError(f"sandbox.profiles.{name}: {name!r} is a built-in profile, choose another name")
                if not isinstance(table, Mapping):
                    # A string would be SandboxSettings' short form, an alias of a built-in.
                    raise ValueError(f"sandbox.profiles.{name} must be a table ([sandbox.profiles.{name}])")
        return value

    @field_validator("profiles")
    @classmethod
    def _named_profiles_are_strict(cls, value: Mapping[str, SandboxSettings]) -> Mapping[str, SandboxSettings]:
        for name, profile in value.items():
            if not profile.strict:
                # Unconfined must be written at the upstream itself, not hidden behind a friendly name.
                raise ValueError(
                    f'sandbox.profiles.{name}: a named profile is always strict; set sandbox = "dangerously_disabled"'
                    " on the upstream that must run unconfined"
                )
        return value

    def named(self, name: str) -> SandboxSettings:
        """The profile called ``name`` (built-in or configured); ``ConfigError`` naming the known ones."""
        if name in BUILTIN_PROFILES:
            return SandboxSettings.model_validate({"mode": name})
        if name in self.profiles:
            return self.profiles[name]
        raise ConfigError(unknown_profile(name, self.profiles))


@dataclass(frozen=True, slots=True)
class Unresolved:
    """A selection ``select_profile`` could not resolve, raised by ``SandboxSettings`` when it validates it.

    Deferred rather than raised at once: raised in a model's "before" validator, the error would stop the
    whole settings validation (every other mistake in the file unreported) and be located at the root.
    """

    problem: str


def select_profile(choice: object, profiles: object) -> object:
    """The raw ``sandbox`` table an upstream's value stands for, before validation.

    ``"name"`` is that profile; ``{profile = "name", ...}`` is that profile with the other fields replacing
    its own (whole values: an ``egress`` list replaces the profile's list); any other value (a table with
    ``mode``, say) is returned unchanged. ``profiles`` is the raw ``[sandbox.profiles]`` table. Works on raw
    data so that the merged table is validated as one profile, its errors located at the upstream.
    """
    overrides: Mapping[str, object] = {}
    if isinstance(choice, str):
        name = choice
    elif isinstance(choice, Mapping) and "profile" in choice:
        name = choice["profile"]
        if not isinstance(name, str):
            return Unresolved(f"profile must be a profile name, got {name!r}")
        overrides = {key: value for key, value in choice.items() if key != "profile"}
        if "mode" in overrides:
            return Unresolved("give profile or mode, not both (the profile names the mode)")
    else:
        return choice
    named = profiles if isinstance(profiles, Mapping) else {}
    if name in BUILTIN_PROFILES:
        base: Mapping[str, object] = {"mode": name}
    elif name not in named:
        return Unresolved(unknown_profile(name, named))
    elif isinstance(table := named[name], Mapping):
        base = table
    else:
        return Unresolved(f"the sandbox profile {name!r} is not valid (see sandbox.profiles.{name})")
    return {**base, **overrides}


def unknown_profile(name: str, profiles: Mapping[str, object]) -> str:
    known = ", ".join([*BUILTIN_PROFILES, *sorted(profiles)])
    return f"no sandbox profile {name!r} (known: {known}; define others as [sandbox.profiles.<name>])"
