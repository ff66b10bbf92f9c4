"""The seccomp filter of a sandboxed server, compiled with libseccomp (pyseccomp) to the BPF ``bwrap --seccomp``
loads just before it runs the launcher.

Default ALLOW, and EPERM for what a tool server never needs and a kernel exploit or an escape usually does:
tracing other processes, (un)mounting, new namespaces (``unshare``, ``setns``, ``clone`` with a
``CLONE_NEW*`` flag; ``clone3`` answers ENOSYS so that libc falls back to ``clone``, whose flags can be
inspected), kernel keyrings, BPF, modules, kexec, perf, userfaultfd, handle-based opens, personality
changes, raw I/O ports, clocks, swap, quotas, chroot. Sockets: the profile's ``socket_families`` (by
default AF_UNIX, plus AF_INET with ``network = "proxy"``: the forwarder listens on 127.0.0.1 inside the
server's own network namespace); every other family (AF_INET6, AF_NETLINK, AF_PACKET, ...) and every
SOCK_RAW socket is refused. A syscall
of a foreign architecture (the 32-bit ABI on x86-64) kills the process (libseccomp's default).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import socket
import tempfile
from typing import Final

from mcp_bastion.sandbox.profile import SocketFamily

DENIED: Final = (
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "mount",
    "umount2",
    "pivot_root",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "kexec_load",
    "kexec_file_load",
    "bpf",
    "keyctl",
    "add_key",
    "request_key",
    "unshare",
    "setns",
    "init_module",
    "finit_module",
    "delete_module",
    "reboot",
    "swapon",
    "swapoff",
    "perf_event_open",
    "userfaultfd",
    "open_by_handle_at",
    "name_to_handle_at",
    "iopl",
    "ioperm",
    "acct",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "quotactl",
    "chroot",
    "lookup_dcookie",
    "syslog",
    "vhangup",
)
"""Syscalls refused outright with EPERM (those unknown to the running libseccomp are skipped)."""

CLONE_NEW_FLAGS: Final = (
    0x00020000  # CLONE_NEWNS
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
    | 0x00000080  # CLONE_NEWTIME
)

PERSONALITY_WEAKENING: Final = (
    0x0040000  # ADDR_NO_RANDOMIZE
    | 0x0100000  # MMAP_PAGE_ZERO
    | 0x0200000  # ADDR_COMPAT_LAYOUT
    | 0x0400000  # READ_IMPLIES_EXEC
    | 0x0800000  # ADDR_LIMIT_32BIT
    | 0x8000000  # ADDR_LIMIT_3GB
)
SOCK_TYPE_MASK: Final = 0xF


FAMILIES: Final[dict[SocketFamily, int]] = {
    "unix": socket.AF_UNIX,
    "inet": socket.AF_INET,
    "inet6": socket.AF_INET6,
    "netlink": socket.AF_NETLINK,
}


def allowed_families(families: tuple[SocketFamily, ...]) -> tuple[int, ...]:
    """The address family numbers of a profile's ``families``, ascending."""
    return tuple(sorted({FAMILIES[name] for name in families}))


def build_filter(families: tuple[SocketFamily, ...]) -> object:
    """The libseccomp filter (a ``pyseccomp.SyscallFilter``) for a profile's socket families."""
    import pyseccomp as sc  # type: ignore[import-untyped]

    eperm = sc.ERRNO(errno.EPERM)
    flt = sc.SyscallFilter(sc.ALLOW)
    with contextlib.suppress(OSError):
        # A binary tree of syscall numbers instead of a linear scan: every allowed syscall (read, write,
        # epoll_wait, ...) pays for the filter, so its depth matters on the per-call path.
        flt.set_attr(sc.Attr.CTL_OPTIMIZE, 2)
    for name in DENIED:
        _add(flt, eperm, name)
    _add(flt, sc.ERRNO(errno.ENOSYS), "clone3")
    # clone(flags, ...) on x86-64 and arm64 alike: the flags are the first argument.
    _add(flt, eperm, "clone", any_bit=CLONE_NEW_FLAGS)
    # A personality with a flag that weakens the process (no ASLR, executable data, page zero) is refused.
    # One comparison per argument and rule (libseccomp), so the query 0xffffffff is refused too: EPERM.
    _add(flt, eperm, "personality", any_bit=PERSONALITY_WEAKENING)
    numbers = allowed_families(families)
    for syscall in ("socket", "socketpair"):
        # Refuse every family outside the allowed ones, written as ranges (libseccomp ORs separate rules).
        if not numbers:
            _add(flt, eperm, syscall)
            continue
        _add(flt, eperm, syscall, sc.Arg(0, sc.LT, numbers[0]))
        for low, high in zip(numbers, [*numbers[1:], None], strict=True):
            if high is None:
                _add(flt, eperm, syscall, sc.Arg(0, sc.GT, low))
            else:
                for family in range(low + 1, high):
                    _add(flt, eperm, syscall, sc.Arg(0, sc.EQ, family))
        _add(flt, eperm, syscall, sc.Arg(1, sc.MASKED_EQ, SOCK_TYPE_MASK, socket.SOCK_RAW))
    return flt


def _add(flt: object, action: int, name: str, *args: object, any_bit: int = 0) -> None:
    import pyseccomp as sc

    try:
        number = sc.resolve_syscall(sc.Arch.NATIVE, name)
    except (ValueError, OSError):
        return  # not a syscall of this architecture (iopl on arm64, say)
    if number < 0:
        return
    if any_bit:
        # "any of these bits set" is one MASKED_EQ rule per bit (MASKED_EQ compares the masked value).
        for bit in range(32):
            flag = 1 << bit
            if any_bit & flag:
                flt.add_rule(action, number, sc.Arg(0, sc.MASKED_EQ, flag, flag))  # type: ignore[attr-defined]
        return
    flt.add_rule(action, number, *args)  # type: ignore[attr-defined]


@functools.cache
def bpf_program(families: tuple[SocketFamily, ...]) -> bytes:
    """The compiled BPF of the profile's filter (cached: it depends on the socket families only)."""
    flt = build_filter(families)
    with tempfile.TemporaryFile() as out:
        flt.export_bpf(out)  # type: ignore[attr-defined]
        out.seek(0)
        return out.read()


def seccomp_available() -> str | None:
    """None when filters can be built and the kernel takes them; else why not."""
    try:
        bpf_program(("unix",))
    except (ImportError, OSError) as exc:
        return f"libseccomp/pyseccomp unusable: {exc}"
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            fields = dict(line.split(":", 1) for line in status if ":" in line)
    except OSError:
        return None
    if "Seccomp" not in fields:
        return "the kernel has no seccomp support (CONFIG_SECCOMP)"
    return None


def memfd(name: str, data: bytes) -> int:
    """An inheritable read-only-by-convention memory file holding ``data``, offset 0 (bwrap reads it)."""
    fd = os.memfd_create(name, 0)
    try:
        os.write(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd
