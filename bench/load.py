"""Load generators: `wrk` (preferred: compiled, ~10 µs of CPU per request) or `bench.pyload` (fallback).

Each generator process drives one URL with N keep-alive connections for D seconds and prints one line
`BENCH {json}` with completed requests, errors and latency percentiles (µs). Several processes can run
at once (one per target) to saturate several upstreams.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from bench.mcp import ID_PLACEHOLDER
from bench.procs import popen

Tool = Literal["wrk", "python"]
RESULT_PREFIX: Final = "BENCH "

_WRK_DONE: Final = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,'
    .. '"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean))
end
"""


@dataclass(frozen=True)
class Request:
    """One HTTP POST a load generator repeats."""

    url: str
    headers: Mapping[str, str]
    body: bytes
    cafile: Path | None = None
    """CA to trust for https (the Python client verifies; wrk does not verify certificates)."""


@dataclass(frozen=True)
class Load:
    request: Request
    connections: int


@dataclass(frozen=True)
class LoadResult:
    requests: int
    duration: float
    errors: dict[str, int]
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


@dataclass
class Generator:
    """Runs loads with one tool; writes its scripts under `workdir`."""

    tool: Tool
    python: str
    workdir: Path
    _scripts: dict[tuple[str, tuple[tuple[str, str], ...], bytes], Path] = field(default_factory=dict)

    def run(self, loads: Sequence[Load], seconds: int) -> list[LoadResult]:
        """Run every load at once for `seconds`; one result per load, in order."""
        procs = [popen(self._argv(load, seconds), stdout=subprocess.PIPE, stderr=subprocess.PIPE) for load in loads]
        outputs: list[tuple[bytes, bytes, int]] = []
        try:
            for proc in procs:
                out, err = proc.communicate(timeout=seconds + 30)
                outputs.append((out, err, proc.returncode))
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        return [_parse(self.tool, out, err, code) for out, err, code in outputs]

    def _argv(self, load: Load, seconds: int) -> list[str]:
        if self.tool == "wrk":
            script = self._wrk_script(load.request)
            # One thread: a wrk thread serves thousands of requests/s, and fewer threads leave more CPU to
            # the processes being measured.
            return [
                "wrk",
                "-t1",
                f"-c{load.connections}",
                f"-d{seconds}s",
                "--timeout",
                "5s",
                "-s",
                str(script),
                load.request.url,
            ]
        spec = {
            "url": load.request.url,
            "headers": dict(load.request.headers),
            "body": load.request.body.decode(),
            "connections": load.connections,
            "seconds": seconds,
            "cafile": str(load.request.cafile) if load.request.cafile else None,
        }
        return [self.python, "-m", "bench.pyload", json.dumps(spec)]

    def _wrk_script(self, request: Request) -> Path:
        key = (request.url, tuple(request.headers.items()), request.body)
        script = self._scripts.get(key)
        if script is None:
            lines = ['wrk.method = "POST"']
            lines += [f"wrk.headers[ {_lua_string(k)} ] = {_lua_string(v)}" for k, v in request.headers.items()]
            body = request.body.decode()
            if ID_PLACEHOLDER in body:
                # A fresh JSON-RPC id per request: one Lua state per wrk thread, so ids are unique per process.
                prefix, suffix = body.split(ID_PLACEHOLDER, 1)
                lines += [
                    f"local prefix, suffix, counter = {_lua_string(prefix)}, {_lua_string(suffix)}, 0",
                    "request = function()",
                    "  counter = counter + 1",
                    "  return wrk.format(nil, nil, nil, prefix .. counter .. suffix)",
                    "end",
                ]
            else:
                lines.append(f"wrk.body = {_lua_string(body)}")
            with tempfile.NamedTemporaryFile(
                "w", suffix=".lua", dir=self.workdir, delete=False, encoding="utf-8"
            ) as handle:
                handle.write("\n".join(lines) + "\n" + _WRK_DONE)
            script = Path(handle.name)
            self._scripts[key] = script
        return script


def _lua_string(text: str) -> str:
    """A Lua long-bracket string literal holding `text` verbatim."""
    level = 1
    while f"]{'=' * level}]" in text:
        level += 1
    return f"[{'=' * level}[{text}]{'=' * level}]"


def _parse(tool: Tool, out: bytes, err: bytes, code: int) -> LoadResult:
    for line in out.decode(errors="replace").splitlines():
        if line.startswith(RESULT_PREFIX):
            data = json.loads(line[len(RESULT_PREFIX) :])
            return LoadResult(
                requests=int(data["requests"]),
                duration=data["duration_us"] / 1e6,
                errors={k: int(data[k]) for k in ("connect", "read", "write", "status", "timeout") if data[k]},
                p50_ms=data["p50_us"] / 1000,
                p90_ms=data["p90_us"] / 1000,
                p99_ms=data["p99_us"] / 1000,
                mean_ms=data["mean_us"] / 1000,
            )
    detail = (err or out).decode(errors="replace").strip()[-2000:]
    raise RuntimeError(f"{tool} load generator failed (exit {code}): {detail}")


def pick_tool(wanted: str) -> Tool:
    """`auto`: wrk when on PATH, else the Python client."""
    if wanted == "wrk" or (wanted == "auto" and shutil.which("wrk")):
        if not shutil.which("wrk"):
            raise RuntimeError("wrk is not on PATH (apt-get install -y wrk)")
        return "wrk"
    return "python"


def tool_version(tool: Tool) -> str:
    if tool == "python":
        return "bench.pyload (asyncio + httptools)"
    proc = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)  # noqa: S607
    first = (proc.stdout or proc.stderr or "wrk").splitlines()[0]
    return first.split(" Copyright", 1)[0].strip()
