"""A TCP to Unix-socket byte relay that runs inside the sandbox, in front of the gateway's egress proxy.

    python -I -m mcp_bastion.sandbox.forwarder --listen 127.0.0.1:3128 --unix /run/egress.sock

The sandbox's network namespace has only loopback, so the server's ``HTTP_PROXY``/``HTTPS_PROXY``
(``http://127.0.0.1:3128``) is its only way out: each connection accepted here is piped, byte for byte, to
a new connection to the proxy's Unix socket (bound into the sandbox). Everything else fails at once, for
want of a route: IP literals, IPv6, UDP, DNS.

It holds no policy (the proxy decides, outside the sandbox) and imports only the standard library, so it
listens a few milliseconds after it starts. One thread per direction per connection, small stacks, a cap
on connections; half-closes are passed on (``shutdown(SHUT_WR)``). It exits when its parent does.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading

BUFFER = 65_536
MAX_CONNECTIONS = 128
"""Connections relayed at once; more are closed on accept (the proxy enforces its own, lower, limit)."""
CONNECT_TIMEOUT = 5.0
PARENT_POLL = 1.0
"""Seconds between checks that the process that started the forwarder is still alive."""
STACK_SIZE = 256 * 1024


def _pipe(source: socket.socket, target: socket.socket) -> None:
    """Copy until end of file or an error, then pass the end of file on."""
    with contextlib.suppress(OSError):
        while data := source.recv(BUFFER):
            target.sendall(data)
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)


def _relay(client: socket.socket, path: str, slots: threading.BoundedSemaphore) -> None:
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.settimeout(CONNECT_TIMEOUT)
        upstream.connect(path)
        upstream.settimeout(None)
        down = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
        down.start()
        _pipe(client, upstream)
        down.join()
    except OSError as exc:
        print(f"mcp-bastion forwarder: cannot reach {path}: {exc}", file=sys.stderr, flush=True)
    finally:
        upstream.close()
        client.close()
        slots.release()


USAGE = "usage: python -m mcp_bastion.sandbox.forwarder --listen HOST:PORT --unix PATH [--max-connections N]"


def _arguments(argv: list[str]) -> tuple[tuple[str, int], str, int]:
    """``--listen``, ``--unix``, ``--max-connections`` (no argparse: it would double the start-up time)."""
    options = dict(zip(argv[::2], argv[1::2], strict=False))
    if len(argv) % 2 or not {"--listen", "--unix"} <= options.keys() <= {"--listen", "--unix", "--max-connections"}:
        raise ValueError(USAGE)
    host, _, port = options["--listen"].rpartition(":")
    limit = options.get("--max-connections", str(MAX_CONNECTIONS))
    if not host or not port.isdigit() or not limit.isdigit():
        raise ValueError(USAGE)
    return (host.removeprefix("[").removesuffix("]"), int(port)), options["--unix"], int(limit)


def serve(listen: tuple[str, int], path: str, *, max_connections: int = MAX_CONNECTIONS) -> None:
    """Relay connections to ``listen`` until the parent process goes away."""
    parent = os.getppid()  # before listening: a parent that waits for the port has been seen by then
    threading.stack_size(STACK_SIZE)
    family = socket.AF_INET6 if ":" in listen[0] else socket.AF_INET
    listener = socket.create_server(listen, family=family, backlog=128)
    listener.settimeout(PARENT_POLL)
    slots = threading.BoundedSemaphore(max_connections)
    while True:
        try:
            client, _ = listener.accept()
        except TimeoutError:
            if os.getppid() != parent:
                return
            continue
        if not slots.acquire(blocking=False):
            client.close()
            continue
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=_relay, args=(client, path, slots), daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    try:
        listen, path, limit = _arguments(sys.argv[1:] if argv is None else argv)
    except ValueError as exc:
        print(exc, file=sys.stderr, flush=True)
        sys.exit(2)
    try:
        serve(listen, path, max_connections=limit)
    except OSError as exc:
        print(f"mcp-bastion forwarder: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
