"""A hostile stdio MCP server for the sandbox tests: `python tests/e2e/escape_server.py`.

Each tool attempts one escape and reports what happened as text: `ok ...` when the attempt worked, or
`denied <ERRNO>` / `limited ...` when the sandbox stopped it. `spin` and `sleep` never answer on their own:
the CPU limit or the wall-clock budget has to end them.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import sys
import time

from mcp.server.mcpserver import MCPServer

server = MCPServer("escape")
TAG = os.urandom(4).hex()


def _denied(exc: OSError) -> str:
    return f"denied {errno.errorcode.get(exc.errno or 0, str(exc.errno))}"


@server.tool(description="Read a file.")
def read(path: str) -> str:
    try:
        with open(path, "rb") as file:
            return "ok " + file.read(200).decode("utf-8", "replace")
    except OSError as exc:
        return _denied(exc)


@server.tool(description="List a directory.")
def listdir(path: str) -> str:
    try:
        return "ok " + ",".join(sorted(os.listdir(path)))
    except OSError as exc:
        return _denied(exc)


@server.tool(description="Write a file.")
def write(path: str) -> str:
    try:
        with open(path, "w") as file:
            file.write("escaped")
        return "ok"
    except OSError as exc:
        return _denied(exc)


@server.tool(description="Open a TCP connection.")
def connect(host: str, port: int) -> str:
    try:
        with socket.create_connection((host, port), timeout=2):
            return "ok"
    except OSError as exc:
        return _denied(exc)


@server.tool(description="Attach to a process with ptrace, then read its memory with process_vm_readv.")
def trace(pid: int) -> str:
    libc = ctypes.CDLL(None, use_errno=True)
    results = []
    if libc.ptrace(16, pid, None, None) != 0:  # PTRACE_ATTACH
        results.append("ptrace " + errno.errorcode[ctypes.get_errno()])
    else:
        results.append("ptrace ok")
    buffer = ctypes.create_string_buffer(8)
    local = (ctypes.c_void_p * 2)(ctypes.cast(buffer, ctypes.c_void_p), 8)
    remote = (ctypes.c_void_p * 2)(0x400000, 8)
    if libc.process_vm_readv(pid, local, 1, remote, 1, 0) < 0:
        results.append("process_vm_readv " + errno.errorcode[ctypes.get_errno()])
    else:
        results.append("process_vm_readv ok")
    return ", ".join(results)


@server.tool(description="Fork until the kernel says no.")
def fork_bomb(limit: int) -> str:
    children = []
    try:
        for _ in range(limit):
            pid = os.fork()
            if pid == 0:
                time.sleep(3)
                os._exit(0)
            children.append(pid)
    except OSError as exc:
        return f"limited after {len(children)} forks: {_denied(exc)}"
    finally:
        for pid in children:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
    return f"ok {len(children)} forks"


@server.tool(description="Allocate memory.")
def memory_bomb(megabytes: int) -> str:
    try:
        block = bytearray(megabytes * 1024 * 1024)
        return f"ok {len(block)}"
    except MemoryError:
        return "limited MemoryError"


@server.tool(description="Burn CPU forever.")
def spin() -> str:
    while True:
        pass


@server.tool(description="Sleep (wall clock).")
def sleep(seconds: float) -> str:
    time.sleep(seconds)
    return "ok"


@server.tool(description="Who am I: uid, pid and a tag drawn at start.")
def whoami() -> str:
    return f"uid={os.getuid()} pid={os.getpid()} tag={TAG}"


if __name__ == "__main__":
    print("escape server up", file=sys.stderr)
    server.run("stdio")
