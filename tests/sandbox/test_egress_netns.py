"""End to end: a client in a fresh network namespace (bubblewrap ``--unshare-net --unshare-user``) whose
only way out is the forwarder (``sandbox/forwarder.py``, started inside) and this process's egress proxy,
whose socket is bound in. Through the proxy, the allowed origins answer (plain HTTP, and HTTPS via
CONNECT with curl); around it, everything fails at once: the host's loopback services, IP literals, IPv6,
UDP and DNS. Packets never leave the namespace the test creates (it has no route but loopback)."""

from __future__ import annotations

import functools
import json
import os
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
import trustme

from tests.helpers.procs import SRC
from tests.sandbox.egress_fixtures import LOCAL, FakeDNS, install, origin_server, running

BWRAP = shutil.which("bwrap")
CURL = shutil.which("curl")
BUDGET = 60.0
"""Seconds for the whole sandboxed client run (it starts two Python processes and curl)."""


@functools.cache
def namespaces_work() -> bool:
    if BWRAP is None:
        return False
    probe = [BWRAP, "--unshare-net", "--unshare-user", "--ro-bind", "/", "/", "true"]
    return subprocess.run(probe, capture_output=True, timeout=10, check=False).returncode == 0


pytestmark = [
    pytest.mark.anyio,
    pytest.mark.e2e,
    pytest.mark.skipif(not namespaces_work(), reason="bubblewrap cannot create a network namespace here"),
]

CLIENT = r"""
import json, os, socket, subprocess, sys, time, urllib.error, urllib.request

http_port, tls_port, ca = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
results = {}
started = time.monotonic()
forwarder = subprocess.Popen(
    [sys.executable, "-I", "-m", "mcp_bastion.sandbox.forwarder", "--listen", "127.0.0.1:3128",
     "--unix", "/run/egress.sock"], stdin=subprocess.DEVNULL)
while True:
    try:
        socket.create_connection(("127.0.0.1", 3128), timeout=1).close()
        break
    except OSError:
        if time.monotonic() - started > 10:
            raise
        time.sleep(0.002)
results["forwarder_ready_ms"] = round((time.monotonic() - started) * 1000, 1)

def attempt(action):
    began = time.monotonic()
    try:
        outcome = action()
    except urllib.error.HTTPError as exc:
        outcome = f"HTTP {exc.code} {exc.read().decode().strip()}"
    except OSError as exc:
        outcome = f"{type(exc).__name__} errno={exc.errno}"
    return {"outcome": outcome, "ms": round((time.monotonic() - began) * 1000, 1)}

proxied = urllib.request.build_opener(urllib.request.ProxyHandler({"http": os.environ["http_proxy"]}))
results["proxied_http"] = attempt(
    lambda: proxied.open(f"http://127.0.0.1:{http_port}/via-proxy", timeout=5).read().decode())
results["proxied_disallowed"] = attempt(lambda: proxied.open("http://blocked.test/", timeout=5).read().decode())
results["proxied_host_ssh"] = attempt(lambda: proxied.open("http://127.0.0.1:22/", timeout=5).read().decode())
results["direct_host_loopback"] = attempt(lambda: socket.create_connection(("127.0.0.1", http_port), timeout=5))
results["direct_ipv4_literal"] = attempt(lambda: socket.create_connection(("192.0.2.1", 80), timeout=5))
results["direct_ipv6_literal"] = attempt(lambda: socket.create_connection(("2001:db8::1", 443), timeout=5))
results["direct_metadata"] = attempt(lambda: socket.create_connection(("169.254.169.254", 80), timeout=5))
results["udp_dns_query"] = attempt(
    lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"\x00" * 12, ("192.0.2.53", 53)))
results["dns_lookup"] = attempt(lambda: socket.getaddrinfo("example.com", 443))
if ca:
    results["curl_https"] = attempt(lambda: subprocess.run(
        ["curl", "-sS", "--max-time", "10", "--cacert", ca, f"https://origin.test:{tls_port}/via-connect"],
        capture_output=True, text=True, check=False).stdout)
forwarder.terminate()
forwarder.wait(5)
print(json.dumps(results))
"""


async def test_the_proxy_is_the_only_way_out_of_the_namespace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert BWRAP is not None
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("origin.test").configure_cert(server_context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    install(FakeDNS({"origin.test": [["127.0.0.1"]]}), monkeypatch)
    async with origin_server() as plain, origin_server(tls=server_context) as tls:
        allow = [f"127.0.0.1:{plain.port}", f"origin.test:{tls.port}"]
        async with running(tmp_path, allow, allowed_networks=LOCAL) as (proxy, audit):
            proxy_url = "http://127.0.0.1:3128"
            command = [
                BWRAP,
                "--unshare-net",
                "--unshare-user",
                "--unshare-pid",
                "--die-with-parent",
                "--ro-bind", "/", "/",
                "--dev", "/dev",
                "--proc", "/proc",
                "--tmpfs", "/run",
                "--ro-bind", str(proxy.socket_path()), "/run/egress.sock",  # as the launcher binds it
                "--setenv", "PYTHONPATH", str(SRC),
                "--setenv", "http_proxy", proxy_url,
                "--setenv", "https_proxy", proxy_url,
                "--setenv", "HTTPS_PROXY", proxy_url,
                "--", sys.executable, "-c", CLIENT, str(plain.port), str(tls.port), str(ca_file) if CURL else "",
            ]  # fmt: skip
            with anyio.fail_after(BUDGET):
                done = await anyio.run_process(command, check=False, stderr=None, env={**os.environ})
            assert done.returncode == 0, done.stdout
            results = json.loads(done.stdout)
            proxied = await plain.next()
            expected = 4 if CURL else 3
            records = await audit.wait(expected)
            if CURL:
                await tls.next()

    def outcome(name: str) -> str:
        value = results[name]["outcome"]
        assert isinstance(value, str)
        return value

    assert outcome("proxied_http") == "saw GET /via-proxy HTTP/1.1"
    assert proxied.peer == "127.0.0.1"
    assert outcome("proxied_disallowed") == "HTTP 403 403 Forbidden: host_not_allowed"
    assert outcome("proxied_host_ssh") == "HTTP 403 403 Forbidden: host_not_allowed"
    assert outcome("direct_host_loopback") == "ConnectionRefusedError errno=111"  # the namespace's own loopback
    for name in ("direct_ipv4_literal", "direct_ipv6_literal", "direct_metadata", "udp_dns_query"):
        assert outcome(name) == "OSError errno=101", name  # ENETUNREACH: no route, no wait
    assert outcome("dns_lookup").startswith("gaierror")
    if CURL:
        assert outcome("curl_https") == "saw GET /via-connect HTTP/1.1"
    decisions = sorted((str(r["method"]), str(r["host"]), str(r["decision"]), str(r["reason"])) for r in records)
    assert decisions == sorted(
        [
            ("GET", "127.0.0.1", "allow", "ok"),
            ("GET", "blocked.test", "deny", "host_not_allowed"),
            ("GET", "127.0.0.1", "deny", "host_not_allowed"),
            *([("CONNECT", "origin.test", "allow", "ok")] if CURL else []),
        ]
    )
