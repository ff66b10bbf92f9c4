"""The stdio sandbox's cost: spawn-to-ready and per call, sandboxed (strict profile) vs unsandboxed, side by side.

    scripts/bench --sandbox-only [--quick] [--json FILE]

The server is the demo CRM (`python -m mcp_bastion.demo.customers --stdio`), spawned the way the gateway
spawns it (`upstream.process.ChildProcess.spawn`, with and without `sandbox.launch.Sandbox`):
- spawn-to-ready: from the spawn until the answer to `initialize` is read (bwrap, the launcher's locks and
  the server's own start); median of several spawns, the two kinds interleaved;
- loop blocked: how long the spawn call itself holds the gateway's event loop (`subprocess` forks and waits
  for the exec synchronously: every other request waits that long), median;
- per call: `tools/call get_customer` round trips on one warm child, median latency;
- CPU per call: the children's CPU (RUSAGE_CHILDREN, which includes bwrap's and the launcher's waited-for
  descendants) of a child that served N calls minus one that served none, divided by N.
Targets (issue 8): spawn within +50 ms, per call within +5 %. Nothing here asserts a figure.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from mcp_bastion.sandbox.launch import Sandbox
from mcp_bastion.sandbox.profile import SandboxSettings
from mcp_bastion.upstream.process import ChildProcess

COMMAND = [sys.executable, "-m", "mcp_bastion.demo.customers", "--stdio"]
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}},
}
CALL = {
    "jsonrpc": "2.0",
    "method": "tools/call",
    "params": {"name": "get_customer", "arguments": {"customer_id": "C001"}},
}


@dataclass
class Side:
    name: str
    spawn_ms: float
    blocked_ms: float
    call_ms: float
    call_cpu_ms: float


async def _ready(sandbox: Sandbox | None) -> tuple[ChildProcess, float, float]:
    started = time.perf_counter()
    child = await ChildProcess.spawn(
        "bench",
        COMMAND,
        env={"PYTHONPATH": ":".join(sys.path[1:])},
        cwd=None,
        limit=1 << 20,
        write_timeout=30,
        sandbox=sandbox,
    )
    blocked = time.perf_counter() - started
    await child.write(orjson.dumps(INITIALIZE))
    while True:
        line = await asyncio.wait_for(child.readline(), 30)
        if line is None:
            raise RuntimeError("the server exited before answering initialize")
        if line.startswith(b"{") and orjson.loads(line).get("id") == 0:
            break
    ready = time.perf_counter() - started
    await child.write(orjson.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
    return child, ready, blocked


async def _calls(child: ChildProcess, count: int) -> list[float]:
    times = []
    for number in range(1, count + 1):
        started = time.perf_counter()
        await child.write(orjson.dumps({**CALL, "id": number}))
        while True:
            line = await asyncio.wait_for(child.readline(), 30)
            if line is None:
                raise RuntimeError("the server exited mid-call")
            if line.startswith(b"{") and orjson.loads(line).get("id") == number:
                break
        times.append(time.perf_counter() - started)
    return times


def _tree_cpu(root: int) -> float:
    """CPU seconds (user + system, with reaped children) of ``root`` and every live descendant."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = sum(int(f) for f in fields[11:15]) / tick
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += times.get(pid, 0.0)
        todo += [child for child, parent in parents.items() if parent == pid]
    return total


async def _measure(sandboxes: dict[str, Sandbox | None], spawns: int, calls: int) -> list[Side]:
    ready: dict[str, list[float]] = {name: [] for name in sandboxes}
    blocked: dict[str, list[float]] = {name: [] for name in sandboxes}
    for _ in range(spawns):
        for name, sandbox in sandboxes.items():
            child, seconds, held = await _ready(sandbox)
            ready[name].append(seconds)
            blocked[name].append(held)
            await child.stop()
    sides = []
    for name, sandbox in sandboxes.items():
        child, _, _ = await _ready(sandbox)
        await _calls(child, 50)  # warm
        before = _tree_cpu(child.pid)
        latencies = await _calls(child, calls)
        cpu = _tree_cpu(child.pid) - before
        await child.stop()
        sides.append(
            Side(
                name,
                statistics.median(ready[name]) * 1000,
                statistics.median(blocked[name]) * 1000,
                statistics.median(latencies) * 1000,
                cpu / calls * 1000,
            )
        )
    return sides


def run(*, quick: bool = False) -> list[Side]:
    state = Path(tempfile.mkdtemp(prefix="mcp-bastion-bench-sandbox-"))
    sandbox = Sandbox("bench", SandboxSettings(), state_dir=state)
    asyncio.run(sandbox.check())
    return asyncio.run(
        _measure({"unsandboxed": None, "sandboxed": sandbox}, 5 if quick else 15, 200 if quick else 1000)
    )


def render(sides: list[Side]) -> str:
    lines = [
        "Stdio sandbox (demo server; ms, median)",
        f"  {'':<14} {'spawn-to-ready':>15} {'loop blocked':>13} {'per call':>10} {'CPU/call':>10}",
    ]
    lines += [
        f"  {s.name:<14} {s.spawn_ms:15.1f} {s.blocked_ms:13.2f} {s.call_ms:10.3f} {s.call_cpu_ms:10.3f}" for s in sides
    ]
    plain, boxed = sides
    spawn = boxed.spawn_ms - plain.spawn_ms
    call = 100 * (boxed.call_ms / plain.call_ms - 1)
    cpu = 100 * (boxed.call_cpu_ms / plain.call_cpu_ms - 1) if plain.call_cpu_ms else 0.0
    blocked = boxed.blocked_ms - plain.blocked_ms
    lines.append(
        f"  {'overhead':<14} {spawn:+14.1f}  {blocked:+12.2f} {call:+9.1f}% {cpu:+9.1f}%"
        "   (targets: spawn +50 ms, call +5 %)"
    )
    return "\n".join(lines)


def document(sides: list[Side]) -> dict[str, dict[str, float]]:
    return {
        s.name: {
            "spawn_ms": round(s.spawn_ms, 2),
            "blocked_ms": round(s.blocked_ms, 3),
            "call_ms": round(s.call_ms, 4),
            "call_cpu_ms": round(s.call_cpu_ms, 4),
        }
        for s in sides
    }


if __name__ == "__main__":
    print(render(run(quick="--quick" in sys.argv)))
