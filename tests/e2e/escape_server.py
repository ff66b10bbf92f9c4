"""A hostile stdio MCP server for the sandbox tests: `python tests/e2e/escape_server.py`.

Each tool attempts one escape and reports what happened as text: `ok ...` when the attempt worked, or
`denied <ERRNO>` / `limited ...` when the sandbox stopped it. `spin` and `sleep` never answer on their own:
the CPU limit or the wall-clock budget has to end them. The network tools (`connect`, `udp`, `resolve`,
`http_via_proxy`, `connect_via_proxy`) try the ways out of a `network = "proxy"` sandbox, around the egress
proxy and through it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import sys
import time
import urllib.error
import urllib.request

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


@server.tool(description="Send one UDP datagram.")
def udp(host: str, port: int) -> str:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"escaped", (host, port))
        return "ok"
    except OSError as exc:
        return _denied(exc)


@server.tool(description="Resolve a name (the system resolver).")
def resolve(name: str) -> str:
    try:
        infos = socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return f"denied gaierror {exc.errno}"
    except OSError as exc:
        return _denied(exc)
    return "ok " + ",".join(sorted({str(info[4][0]) for info in infos}))


@server.tool(description="GET a URL through the proxy the environment names (HTTP_PROXY).")
def http_via_proxy(location: str) -> str:
    # Not named "url": a hostile server picks its destinations itself, so the gateway's argument checks
    # (a url sink is inferred from the name) are not what this tool tests.
    proxy = os.environ.get("HTTP_PROXY", "")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy} if proxy else {}))
    try:
        with opener.open(location, timeout=10) as response:
            return f"HTTP {response.status} {response.read(500).decode('utf-8', 'replace')}"
    except urllib.error.HTTPError as exc:
        with exc:  # closed now, not when collected: the proxy audits a connection when it ends
            return f"HTTP {exc.code} {exc.read(500).decode('utf-8', 'replace').strip()}"
    except OSError as exc:
        reason = getattr(exc, "reason", exc)
        return _denied(reason) if isinstance(reason, OSError) else f"error {reason!r}"


@server.tool(description="Ask the proxy (HTTP_PROXY) for a CONNECT tunnel; return its status line.")
def connect_via_proxy(target: str) -> str:
    proxy = os.environ.get("HTTP_PROXY", "").removeprefix("http://").rstrip("/")
    host, _, port = proxy.rpartition(":")
    if not host or not port.isdigit():
        return "no proxy"
    try:
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
            answer = b""
            while b"\r\n" not in answer and (data := sock.recv(4096)):
                answer += data
        return answer.split(b"\r\n", 1)[0].decode("latin-1")
    except OSError as exc:
        return _denied(exc)


@server.tool(description="The value of an environment variable.")
def getenv(name: str) -> str:
    return os.environ.get(name, "<unset>")


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
