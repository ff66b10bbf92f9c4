"""The launcher bwrap runs inside the sandbox: the last locks, then ``exec`` of the server.

    python -I -S -c "<put the package on sys.path; inner.main()>" --spec <hex> [--join FD] -- <command...>

In order: with ``network = "proxy"`` the forwarder is forked (it listens on 127.0.0.1 inside the sandbox's
own network namespace and relays to the gateway's egress proxy over ``/run/egress.sock``); with ``--join``
the pids cgroup is entered (``sandbox/cgroup.py``); rlimits (address space, CPU, processes, open files,
file size, no core dumps); a Landlock ruleset (read and execute on the read-only paths, read and write on
/tmp and the data directory, TCP connect to the forwarder's port only, no TCP bind, signals and abstract
Unix sockets scoped to the sandbox) on kernels that have Landlock, best effort on older ones (the gateway
warned at startup); then ``execvp`` of the server. Any failure before the exec exits with status 125 and
a line on stderr, which the gateway logs: the server never runs with fewer locks than planned.

Kept to a few standard modules (no ``site``, no ``landlockpy``): it runs on every spawn, so it must start
fast. ``no_new_privs`` is set by bwrap already (``--seccomp`` needs it) and again before Landlock.
"""

from __future__ import annotations

import marshal
import os
import resource
import sys

# Not ``typing``: importing it costs ~4 ms a spawn (mypy knows this spelling).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

FAILED: Final = 125
FORWARDER: Final = "mcp_bastion.sandbox.forwarder"
MB: Final = 1024 * 1024


def apply_rlimits(limits: dict[str, int]) -> None:
    def cap(kind: int, value: int) -> None:
        resource.setrlimit(kind, (value, value))

    cap(resource.RLIMIT_AS, limits["memory_mb"] * MB)
    # Soft limit: SIGXCPU (kills an ordinary process); one second later the hard limit: SIGKILL.
    resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu_seconds"], limits["cpu_seconds"] + 1))
    cap(resource.RLIMIT_NPROC, limits["processes"])
    cap(resource.RLIMIT_NOFILE, limits["open_files"])
    cap(resource.RLIMIT_FSIZE, limits["file_size_mb"] * MB)
    cap(resource.RLIMIT_CORE, 0)


# Landlock, straight through libc's syscall(): importing landlockpy (ctypes.util, its test helpers) costs
# ~30 ms, on every spawn. The values mirror linux/landlock.h; tests/sandbox checks them against landlockpy.
SYS_CREATE_RULESET: Final = 444  # the same number on every architecture
SYS_ADD_RULE: Final = 445
SYS_RESTRICT_SELF: Final = 446
RULE_PATH_BENEATH: Final = 1
RULE_NET_PORT: Final = 2
EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR, MAKE_REG, MAKE_SOCK = 1 << 4, 1 << 5, 1 << 6, 1 << 7, 1 << 8, 1 << 9
MAKE_FIFO, MAKE_BLOCK, MAKE_SYM, REFER, TRUNCATE, IOCTL_DEV = 1 << 10, 1 << 11, 1 << 12, 1 << 13, 1 << 14, 1 << 15
FS_BY_ABI: Final = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
"""Filesystem rights handled, by the ABI that introduced them (RESOLVE_UNIX, ABI 9, is not handled)."""
FILE_RIGHTS: Final = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV
CONNECT_TCP: Final = 1 << 1
NET_TCP: Final = 0b11  # BIND_TCP | CONNECT_TCP, ABI 4
SCOPES: Final = 0b11  # ABSTRACT_UNIX_SOCKET | SIGNAL, ABI 6

READ: Final = EXECUTE | READ_FILE | READ_DIR
WRITE: Final = READ | WRITE_FILE | REMOVE_DIR | REMOVE_FILE | MAKE_DIR | MAKE_REG | MAKE_SYM | MAKE_FIFO | MAKE_SOCK
WRITE_ALL: Final = WRITE | REFER | TRUNCATE
DEVICE: Final = READ_FILE | WRITE_FILE | READ_DIR | IOCTL_DEV


class Landlock:
    """A ruleset under construction (the kernel's own calls, errors as ``OSError``)."""

    def __init__(self) -> None:
        import ctypes

        self._ctypes = ctypes
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.syscall.restype = ctypes.c_long
        self.abi = self._call(SYS_CREATE_RULESET, None, 0, 1, missing_ok=True)  # LANDLOCK_CREATE_RULESET_VERSION
        self.fs = max((mask for abi, mask in FS_BY_ABI.items() if self.abi >= abi), default=0)
        self.net = NET_TCP if self.abi >= 4 else 0
        self.scoped = SCOPES if self.abi >= 6 else 0
        self.fd = -1

    def _call(self, number: int, *args: object, missing_ok: bool = False) -> int:
        result = int(self._libc.syscall(number, *args))
        if result < 0:
            code = self._ctypes.get_errno()
            if missing_ok and code in (38, 95):  # ENOSYS, EOPNOTSUPP: no Landlock
                return 0
            raise OSError(code, f"landlock syscall {number}: {os.strerror(code)}")
        return result

    def create(self) -> None:
        import struct

        attr = self._ctypes.create_string_buffer(struct.pack("=QQQ", self.fs, self.net, self.scoped))
        size = 24 if self.scoped else 16 if self.net else 8
        self.fd = self._call(SYS_CREATE_RULESET, attr, size, 0)

    def allow_path(self, path: str, access: int) -> None:
        import struct

        if not os.path.lexists(path):
            return
        if not os.path.isdir(path):
            access &= FILE_RIGHTS  # the kernel refuses directory rights on a file
        access &= self.fs
        if not access:
            return
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        try:
            attr = self._ctypes.create_string_buffer(struct.pack("=Qi", access, fd))
            self._call(SYS_ADD_RULE, self.fd, RULE_PATH_BENEATH, attr, 0)
        finally:
            os.close(fd)

    def allow_port(self, port: int, access: int) -> None:
        import struct

        if self.net & access:
            attr = self._ctypes.create_string_buffer(struct.pack("=QQ", self.net & access, port))
            self._call(SYS_ADD_RULE, self.fd, RULE_NET_PORT, attr, 0)

    def restrict(self) -> None:
        if self._libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS (bwrap set it already: harmless)
            raise OSError(self._ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
        self._call(SYS_RESTRICT_SELF, self.fd, 0)
        os.close(self.fd)


def apply_landlock(spec: dict[str, Any]) -> int:
    """Restrict this process (and what it executes) to the spec's paths and ports; return the ABI used
    (0: the kernel has no Landlock; the gateway warned at startup)."""
    ruleset = Landlock()
    if ruleset.abi < 1:
        return 0
    ruleset.create()
    for path in spec["read_only"]:
        ruleset.allow_path(path, READ)
    for path in spec["writable"]:
        ruleset.allow_path(path, WRITE_ALL)
    for path in spec["devices"]:
        ruleset.allow_path(path, DEVICE)
    ruleset.allow_path(spec["proc"], READ_FILE | READ_DIR)
    if spec["network"] == "proxy":
        ruleset.allow_path(spec["proxy_socket"], READ_FILE | WRITE_FILE)
        ruleset.allow_port(spec["proxy_port"], CONNECT_TCP)
    ruleset.restrict()
    return ruleset.abi


def start_forwarder(spec: dict[str, Any]) -> None:
    """Fork ``mcp_bastion.sandbox.forwarder`` and wait until it listens (it prints nothing on stdout: the
    protocol pipe belongs to the server; its readiness is the port accepting connections)."""
    import socket
    import subprocess
    import time

    port = spec["proxy_port"]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    boot = f"import sys, runpy; sys.path.insert(0, {root!r}); runpy.run_module({FORWARDER!r}, run_name='__main__')"
    forwarder = [sys.executable, "-I", "-S", "-c", boot]
    forwarder += ["--listen", f"127.0.0.1:{port}", "--unix", spec["proxy_socket"]]
    subprocess.Popen(forwarder, stdin=subprocess.DEVNULL, stdout=2)  # noqa: S603
    deadline = time.monotonic() + 5
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def encode(spec: dict[str, Any]) -> str:
    """The spec as the launcher's argument: marshal (built in, unlike json, whose import costs ~9 ms)."""
    return marshal.dumps(spec).hex()


def decode(text: str) -> dict[str, Any]:
    spec = marshal.loads(bytes.fromhex(text))  # noqa: S302 (written by the gateway, same interpreter)
    if not isinstance(spec, dict):
        raise ValueError("the spec is not a dict")
    return spec


def join_group(fd: int) -> None:
    """Enter the pids cgroup whose ``cgroup.procs`` the gateway opened (``sandbox/cgroup.py``); the
    forwarder, started before, stays out of the server's process budget. The server never gets the fd."""
    try:
        os.write(fd, b"0")
    finally:
        os.close(fd)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    try:
        group = None
        if args[2:3] == ["--join"]:
            group, args = int(args[3]), args[:2] + args[4:]
        if len(args) < 4 or args[0] != "--spec" or args[2] != "--":
            raise ValueError("usage: python -m mcp_bastion.sandbox.inner --spec HEX [--join FD] -- COMMAND...")
        spec = decode(args[1])
        command = args[3:]
        if spec["network"] == "proxy":
            start_forwarder(spec)
        if group is not None:
            join_group(group)
        for variable in spec.get("unset", ()):
            os.environ.pop(variable, None)
        apply_rlimits(spec["rlimits"])
        if spec["landlock"]:
            apply_landlock(spec)
    except Exception as exc:
        print(f"mcp-bastion sandbox: cannot start the server: {exc}", file=sys.stderr, flush=True)
        os._exit(FAILED)
    try:
        os.execvp(command[0], command)  # noqa: S606
    except OSError as exc:
        print(f"mcp-bastion sandbox: cannot run {command[0]!r}: {exc}", file=sys.stderr, flush=True)
        os._exit(127)


if __name__ == "__main__":
    main()
