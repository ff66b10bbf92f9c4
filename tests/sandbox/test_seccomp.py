"""The seccomp filter: what it refuses, per network mode, checked on the compiled filter and on a real child."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile

import pytest

from mcp_bastion.sandbox import seccomp
from mcp_bastion.sandbox.check import probe
from mcp_bastion.sandbox.profile import SandboxSettings, SocketFamily

UNIX: tuple[SocketFamily, ...] = ("unix",)


def pfc(families: tuple[SocketFamily, ...] = UNIX) -> str:
    with tempfile.TemporaryFile("w+") as out:
        seccomp.build_filter(families).export_pfc(out)  # type: ignore[attr-defined]
        out.seek(0)
        return out.read()


@pytest.mark.parametrize("name", ["ptrace", "mount", "unshare", "setns", "bpf", "keyctl", "kexec_load", "chroot"])
def test_dangerous_syscalls_are_refused(name: str) -> None:
    assert f'filter for syscall "{name}"' in pfc()


def test_clone3_answers_enosys_so_that_clone_flags_can_be_checked() -> None:
    text = pfc()
    assert "action ERRNO(38)" in text.split('"clone3"')[1].split("# filter")[0]
    assert "0x40000000" in text.split('syscall "clone"')[1].split("# filter")[0]  # CLONE_NEWNET


def test_the_families_allowed_per_profile() -> None:
    none = SandboxSettings()
    proxy = SandboxSettings(network="proxy", egress=("example.com:443",))
    assert seccomp.allowed_families(none.families) == (socket.AF_UNIX,)
    assert seccomp.allowed_families(proxy.families) == (socket.AF_UNIX, socket.AF_INET)
    wider = SandboxSettings(socket_families=("inet6", "unix", "inet6"))
    assert wider.families == ("inet6", "unix")
    assert seccomp.allowed_families(wider.families) == (socket.AF_UNIX, socket.AF_INET6)
    assert seccomp.bpf_program(UNIX) != b""


def test_the_proxy_needs_its_families() -> None:
    with pytest.raises(ValueError, match="socket_families"):
        SandboxSettings(network="proxy", egress=("example.com:443",), socket_families=("unix",))


PROBE = """
import ctypes, errno, socket
libc = ctypes.CDLL(None, use_errno=True)
def sock(family, kind=socket.SOCK_STREAM):
    try:
        socket.socket(family, kind).close(); return "ok"
    except OSError as exc:
        return errno.errorcode[exc.errno]
print(sock(socket.AF_UNIX), sock(socket.AF_INET), sock(socket.AF_INET6), sock(socket.AF_NETLINK, socket.SOCK_DGRAM),
      sock(socket.AF_NETLINK, socket.SOCK_RAW), sock(socket.AF_INET, socket.SOCK_RAW), libc.ptrace(16, 1, 0, 0),
      ctypes.get_errno())
"""


@pytest.mark.skipif(not probe().strict_ok, reason="needs bwrap")
@pytest.mark.parametrize(
    ("families", "expected"),
    [
        pytest.param(UNIX, "ok EPERM EPERM EPERM EPERM EPERM -1 1", id="default"),
        pytest.param(("unix", "inet"), "ok ok EPERM EPERM EPERM EPERM -1 1", id="proxy"),
        # netlink opened: datagram netlink works, raw sockets of any family are still refused.
        pytest.param(("unix", "inet6", "netlink"), "ok EPERM ok ok EPERM EPERM -1 1", id="wider"),
        pytest.param((), "EPERM EPERM EPERM EPERM EPERM EPERM -1 1", id="no-sockets"),
    ],
)
def test_a_child_under_the_filter(families: tuple[SocketFamily, ...], expected: str) -> None:
    fd = seccomp.memfd("seccomp", seccomp.bpf_program(families))
    try:
        argv = ["bwrap", "--ro-bind", "/", "/", "--unshare-all", "--unshare-user", "--seccomp", str(fd)]
        done = subprocess.run(
            [*argv, sys.executable, "-I", "-c", PROBE], pass_fds=(fd,), capture_output=True, text=True, timeout=30
        )
    finally:
        import os

        os.close(fd)
    assert done.stdout.strip() == expected, done.stderr
