"""Child processes of the benchmark (echo upstreams, the gateway) and CPU accounting from /proc.

Every child gets `PR_SET_PDEATHSIG` (SIGTERM) so that it dies with the benchmark even if the benchmark is
killed with SIGKILL; `Children.close()` (called from a `finally`) terminates the rest in bounded time.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG: Final = 1


def _die_with_parent() -> None:
    """`preexec_fn`: ask the kernel to SIGTERM this child when the benchmark process ends."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def popen(
    argv: Sequence[str], *, stdout: IO[bytes] | int | None, stderr: IO[bytes] | int | None
) -> subprocess.Popen[bytes]:
    """Start a child that dies with the benchmark."""
    return subprocess.Popen(  # noqa: S603 - argv built by the benchmark itself
        list(argv), stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, preexec_fn=_die_with_parent
    )


class Children:
    """The long-lived children (upstreams, gateway); `close()` ends them all, SIGTERM then SIGKILL."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []

    def add(self, proc: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        self._procs.append(proc)
        return proc

    def close(self, grace: float = 5.0) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
        deadline = time.monotonic() + grace
        for proc in self._procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout=5)
        self._procs.clear()


def start_echo(python: str, log: Path, timeout: float = 30.0) -> tuple[subprocess.Popen[bytes], str]:
    """Start `mcp_bastion.demo.echo` over HTTP on a free port; return it and its URL once it says READY."""
    argv = [python, "-m", "mcp_bastion.demo.echo", "--http", "--host", "127.0.0.1", "--port", "0"]
    with log.open("wb") as err:
        proc = popen(argv, stdout=subprocess.PIPE, stderr=err)
    assert proc.stdout is not None
    line = _read_line(proc.stdout, timeout)
    if not line.startswith("READY "):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"echo upstream did not start (said {line!r}); see {log}")
    return proc, line.split(" ", 1)[1].strip()


def _read_line(stream: IO[bytes], timeout: float) -> str:
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        if not sel.select(timeout):
            return ""
    return stream.readline().decode(errors="replace")


def wait_until(check: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen[bytes]) -> None:
    """Poll `check` until it is true; fail when `proc` exits or after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready after {timeout:.0f} s")


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads, living and exited), in seconds."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = raw[raw.rindex(")") + 2 :].split()
    # After "pid (comm) ": state is field 3 (index 0 here); utime, stime are fields 14, 15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot (/proc/stat: everything but idle and iowait)."""
    first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    values = [int(v) for v in first[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    # guest time is already counted in user/nice.
    return (sum(values[:8]) - idle) / CLOCK_TICKS


def children_cpu_seconds() -> float:
    """CPU of this process's reaped children (the load generators once they have exited)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class CPUSample:
    at: float
    per_pid: dict[int, float]
    machine: float
    children: float


def sample(pids: Sequence[int]) -> CPUSample:
    return CPUSample(
        at=time.monotonic(),
        per_pid={pid: process_cpu_seconds(pid) for pid in pids},
        machine=machine_busy_seconds(),
        children=children_cpu_seconds(),
    )
