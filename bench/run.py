"""The gateway's hop: `tools/call` to a plain `mcp` SDK upstream, direct and through mcp-bastion, same run;
then the authorization side (`bench.oauth`: token endpoint grants per second, cost of verifying a token);
then the vault (`bench.vault`: seal/open per call warm, cold loads of each KEK backend); then the content
defence (`bench.content`: argument check and result inspection per call, in process).

    scripts/bench [--quick] [--json FILE] [--reps N] [--seconds S] [--saturate N] [--client auto|wrk|python]
                  [--oauth-only | --no-oauth] [--vault-only | --no-vault] [--content-only | --no-content]
                  [--sandbox-only | --no-sandbox]

`--oauth-only`, `--vault-only`, `--content-only` and `--sandbox-only` run only those sections (several may be given).

Starts N echo upstreams (`mcp_bastion.demo.echo`, one process each) and one gateway in front of them with
its default security (TLS with a local CA, JWT bearer tokens from the built-in issuer, audit log), then
for each scenario runs the same load against the upstream directly and through the gateway, alternating
which goes first, `--reps` times:

- modern c=1 / c=16: 2026-07-28 single POSTs (no session) on 1 or 16 keep-alive connections;
- modern saturated: every upstream driven at once (16 connections each), so both cores are busy;
- handshake c=1 / c=16: one `initialize`d session per target, then `tools/call` with `Mcp-Session-Id`.

CPU comes from /proc (utime + stime deltas per process over each run, divided by completed calls);
"other" is whatever the rest of the machine used meanwhile (a busy machine makes figures noisy).
Figures are medians over repetitions; ratios and added latencies are taken per repetition (direct and
gateway ran back to back) and then the median. Exit status 0 when the benchmark ran, whatever the
figures (no timing assertions); 1 when it could not run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from bench import mcp
from bench.load import Generator, Load, LoadResult, Request, Tool, pick_tool, tool_version
from bench.procs import Children, CPUSample, popen, sample, start_echo, wait_until

Target = Literal["direct", "gateway"]
TARGETS: Final[tuple[Target, Target]] = ("direct", "gateway")
TOKEN_LIFETIME: Final = 3600
CPU_TARGET_MS: Final = 0.5
P50_TARGET_MS: Final = 0.5
NAN: Final = float("nan")
KNOWN_STDERR: Final = ("TLS: using the local CA", "INSECURE: upstreams.", "mcp_bastion.policy.store: policy ")
"""Gateway log lines expected at every start; anything else in its stderr is reported."""


@dataclass(frozen=True)
class Scenario:
    key: str
    mode: mcp.Mode
    connections: int
    width: int
    """How many upstreams (and endpoints) are driven at once."""


@dataclass
class Run:
    scenario: str
    target: Target
    rep: int
    requests: int
    seconds: float
    rps: float
    errors: dict[str, int]
    p50_ms: float
    p99_ms: float
    gateway_cpu_ms: float
    upstream_cpu_ms: float
    client_cpu_ms: float
    other_cores: float


@dataclass
class Rig:
    """The running processes and what it takes to reach them."""

    python: str
    workdir: Path
    echo_urls: list[str]
    echo_pids: list[int]
    gateway_pid: int
    gateway_urls: list[str]
    cafile: Path
    tokens: list[str]
    gateway_stderr: Path
    audit_log: Path
    echo_stderr: list[Path]
    sessions: dict[tuple[Target, int], str] = field(default_factory=dict)

    def request(self, target: Target, index: int, mode: mcp.Mode) -> Request:
        if target == "direct":
            url, token, cafile = self.echo_urls[index], None, None
        else:
            url, token, cafile = self.gateway_urls[index], self.tokens[index], self.cafile
        session = self.sessions.get((target, index)) if mode == "handshake" else None
        return Request(url, mcp.call_headers(mode, token, session), mcp.call_body(mode), cafile)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


BENCH_POLICY = """
@id("bench-calls")
permit(principal == User::"bench", action in [Action::"tools/call", Action::"list"], resource);
@id("no-destructive")
forbid(principal, action == Action::"tools/call", resource) when { resource.destructive && resource.name == "drop" };
"""


def start_rig(python: str, workdir: Path, width: int, children: Children) -> Rig:
    echo_urls: list[str] = []
    echo_pids: list[int] = []
    echo_logs: list[Path] = []
    for index in range(width):
        log = workdir / f"echo{index + 1}.stderr"
        proc, url = start_echo(python, log)
        children.add(proc)
        echo_urls.append(url)
        echo_pids.append(proc.pid)
        echo_logs.append(log)
    port = _free_port()
    state = workdir / "state"
    names = [f"echo{index + 1}" for index in range(width)]
    # A real policy and real rate limits, so their cost is in the figures: the bench user may call the echo
    # servers' tools (one permit, one forbid to evaluate); the buckets are sized never to refuse.
    policy_file = workdir / "bench.cedar"
    policy_file.write_text(BENCH_POLICY, encoding="utf-8")
    config = [
        f'[server]\nhost = "127.0.0.1"\nport = {port}\nstate_dir = "{state}"\n',
        f'[policy]\nfiles = ["{policy_file}"]\n[policy.rate_limits]\n'
        'per_user = "1000000/second"\nper_tool = "1000000/second"\nper_client = "1000000/second"\n',
    ]
    config += [
        f'[upstreams.{name}]\nurl = "{url}"\nallow_insecure_http = true\n'
        for name, url in zip(names, echo_urls, strict=True)
    ]
    config_path = workdir / "gateway.toml"
    config_path.write_text("\n".join(config), encoding="utf-8")
    tokens = [_mint(python, config_path, name) for name in names]
    gateway_stderr = workdir / "gateway.stderr"
    with gateway_stderr.open("wb") as err:
        gateway = children.add(
            popen([python, "-m", "mcp_bastion", "serve", "--config", str(config_path)], stdout=err, stderr=err)
        )
    base = f"https://127.0.0.1:{port}"
    cafile = state / "tls" / "ca.crt"

    def healthy() -> bool:
        if not cafile.exists():
            return False
        try:
            return mcp.request("GET", f"{base}/healthz", {}, cafile=cafile, timeout=2).status == 200
        except OSError:
            return False

    wait_until(healthy, 30, "gateway", gateway)
    return Rig(
        python=python,
        workdir=workdir,
        echo_urls=echo_urls,
        echo_pids=echo_pids,
        gateway_pid=gateway.pid,
        gateway_urls=[f"{base}/mcp/{name}" for name in names],
        cafile=cafile,
        tokens=tokens,
        gateway_stderr=gateway_stderr,
        audit_log=state / "audit.jsonl",
        echo_stderr=echo_logs,
    )


def _mint(python: str, config: Path, server: str) -> str:
    argv = [python, "-m", "mcp_bastion", "token", "--config", str(config), "--sub", "bench", "--server", server]
    argv += ["--lifetime", str(TOKEN_LIFETIME)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)  # noqa: S603
    if proc.returncode != 0 or not proc.stdout.strip():
        raise RuntimeError(f"mcp-bastion token failed: {proc.stderr.strip()}")
    return proc.stdout.strip().splitlines()[-1]


def prepare(rig: Rig, modes: Sequence[mcp.Mode], width: int) -> None:
    """Check every target answers `tools/call` correctly; open the handshake-era sessions."""
    for mode in modes:
        # Handshake-era scenarios drive only the first upstream.
        for index in range(width if mode == "modern" else 1):
            for target in TARGETS:
                if mode == "handshake":
                    token = rig.tokens[index] if target == "gateway" else None
                    url = rig.gateway_urls[index] if target == "gateway" else rig.echo_urls[index]
                    cafile = rig.cafile if target == "gateway" else None
                    rig.sessions[(target, index)] = mcp.open_session(url, token, cafile)
                request = rig.request(target, index, mode)
                mcp.check_echo(request.url, mode, request.headers, request.cafile)


def measure(
    rig: Rig, generator: Generator, scenario: Scenario, target: Target, rep: int, seconds: int, warmup: int
) -> Run:
    loads = [Load(rig.request(target, i, scenario.mode), scenario.connections) for i in range(scenario.width)]
    if warmup > 0:
        generator.run(loads, warmup)
    pids = [rig.gateway_pid, *rig.echo_pids]
    before = sample(pids)
    results = generator.run(loads, seconds)
    after = sample(pids)
    return _run(scenario, target, rep, results, before, after, rig)


def _run(
    scenario: Scenario,
    target: Target,
    rep: int,
    results: Sequence[LoadResult],
    before: CPUSample,
    after: CPUSample,
    rig: Rig,
) -> Run:
    requests = sum(r.requests for r in results)
    elapsed = max(r.duration for r in results)
    calls = max(requests, 1)
    delta = {pid: after.per_pid[pid] - before.per_pid[pid] for pid in before.per_pid}
    gateway = delta[rig.gateway_pid]
    upstream = sum(delta[pid] for pid in rig.echo_pids)
    client = after.children - before.children
    window = max(after.at - before.at, 1e-9)
    other = (after.machine - before.machine) - gateway - upstream - client
    errors: Counter[str] = Counter()
    for result in results:
        errors.update(result.errors)
    return Run(
        scenario=scenario.key,
        target=target,
        rep=rep,
        requests=requests,
        seconds=elapsed,
        rps=requests / elapsed if elapsed else 0.0,
        errors=dict(errors),
        # Several generators at once (saturated): the slowest one's percentiles.
        p50_ms=max(r.p50_ms for r in results),
        p99_ms=max(r.p99_ms for r in results),
        gateway_cpu_ms=gateway * 1000 / calls,
        upstream_cpu_ms=upstream * 1000 / calls,
        client_cpu_ms=client * 1000 / calls,
        other_cores=max(other, 0.0) / window,
    )


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


@dataclass
class Summary:
    scenario: str
    target: Target
    rps: float
    p50_ms: float
    p99_ms: float
    gateway_cpu_ms: float
    upstream_cpu_ms: float
    client_cpu_ms: float
    other_cores: float
    errors: int
    requests: int


def summarize(runs: Sequence[Run], scenarios: Sequence[Scenario]) -> list[Summary]:
    rows: list[Summary] = []
    for scenario in scenarios:
        for target in TARGETS:
            mine = [r for r in runs if r.scenario == scenario.key and r.target == target]
            if not mine:
                continue
            rows.append(
                Summary(
                    scenario=scenario.key,
                    target=target,
                    rps=_median([r.rps for r in mine]),
                    p50_ms=_median([r.p50_ms for r in mine]),
                    p99_ms=_median([r.p99_ms for r in mine]),
                    gateway_cpu_ms=_median([r.gateway_cpu_ms for r in mine]),
                    upstream_cpu_ms=_median([r.upstream_cpu_ms for r in mine]),
                    client_cpu_ms=_median([r.client_cpu_ms for r in mine]),
                    other_cores=statistics.fmean(r.other_cores for r in mine),
                    errors=sum(sum(r.errors.values()) for r in mine),
                    requests=sum(r.requests for r in mine),
                )
            )
    return rows


def paired(runs: Sequence[Run], scenario: str, figure: str) -> float:
    """Median over repetitions of gateway-vs-direct: `ratio` of throughput, or `p50`/`p99` added (ms)."""
    values: list[float] = []
    for rep in sorted({r.rep for r in runs}):
        pair = {r.target: r for r in runs if r.scenario == scenario and r.rep == rep}
        if len(pair) != 2:
            continue
        direct, gateway = pair["direct"], pair["gateway"]
        if figure == "ratio":
            values.append(gateway.rps / direct.rps if direct.rps else float("nan"))
        elif figure == "p50":
            values.append(gateway.p50_ms - direct.p50_ms)
        else:
            values.append(gateway.p99_ms - direct.p99_ms)
    return _median(values)


def cpu_model_ratio(rows: Sequence[Summary], scenario: str) -> float:
    """Throughput ratio when the CPU is the bottleneck: CPU per call direct / CPU per call through the gateway.

    Unlike the measured ratio this does not depend on what the rest of the machine does meanwhile.
    """
    pair = {r.target: r for r in rows if r.scenario == scenario}
    if len(pair) != 2:
        return NAN
    direct, gateway = pair["direct"], pair["gateway"]
    direct_cpu = direct.upstream_cpu_ms + direct.client_cpu_ms
    gateway_cpu = gateway.gateway_cpu_ms + gateway.upstream_cpu_ms + gateway.client_cpu_ms
    return direct_cpu / gateway_cpu if gateway_cpu else NAN


def figures(runs: Sequence[Run], rows: Sequence[Summary], mode: mcp.Mode) -> dict[str, float]:
    def gateway_cpu(scenario: str) -> float:
        return next((r.gateway_cpu_ms for r in rows if r.scenario == scenario and r.target == "gateway"), NAN)

    prefix = mode
    found = {
        "gateway_cpu_ms_per_call_c16": gateway_cpu(f"{prefix} c=16"),
        "gateway_cpu_ms_per_call_c1": gateway_cpu(f"{prefix} c=1"),
        "throughput_ratio_c16": paired(runs, f"{prefix} c=16", "ratio"),
        "added_p50_ms_c1": paired(runs, f"{prefix} c=1", "p50"),
        "added_p99_ms_c1": paired(runs, f"{prefix} c=1", "p99"),
    }
    if any(r.scenario == f"{prefix} saturated" for r in runs):
        found["gateway_cpu_ms_per_call_saturated"] = gateway_cpu(f"{prefix} saturated")
        found["throughput_ratio_saturated"] = paired(runs, f"{prefix} saturated", "ratio")
        found["throughput_ratio_saturated_cpu_model"] = cpu_model_ratio(rows, f"{prefix} saturated")
    return {k: v for k, v in found.items() if v == v}  # drop NaN (scenario not run)


def render_table(rows: Sequence[Summary]) -> str:
    header = (
        f"{'scenario':<20} {'target':<8} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'gw CPU':>7} {'up CPU':>7} {'client':>7} {'other':>6} {'errors':>6}"
    )
    per_call = f"{'ms/call':>7} " * 3
    units = f"{'':<20} {'':<8} {'':>8} {'':>7} {'':>7} {per_call}{'cores':>6}"
    lines = [header, units, "-" * len(header)]
    for row in rows:
        gw = f"{row.gateway_cpu_ms:7.3f}" if row.target == "gateway" else f"{'-':>7}"
        lines.append(
            f"{row.scenario:<20} {row.target:<8} {row.rps:8.0f} {row.p50_ms:7.2f} {row.p99_ms:7.2f} "
            f"{gw} {row.upstream_cpu_ms:7.3f} {row.client_cpu_ms:7.3f} {row.other_cores:6.2f} {row.errors:6d}"
        )
    return "\n".join(lines)


def _verdict(value: float, limit: float) -> str:
    return "ok" if value <= limit else "OVER"


def render_headline(found: dict[str, float], mode: mcp.Mode, width: int) -> str:
    title = "2026-07-28 single POST" if mode == "modern" else "handshake era (initialize + Mcp-Session-Id)"
    lines = [f"{title}:"]
    if "gateway_cpu_ms_per_call_c16" in found:
        cpu = found["gateway_cpu_ms_per_call_c16"]
        lines.append(
            f"  gateway CPU per call: {cpu:.3f} ms (target <= {CPU_TARGET_MS}: {_verdict(cpu, CPU_TARGET_MS)})"
            f"  [c=1: {found.get('gateway_cpu_ms_per_call_c1', NAN):.3f} ms"
            + (
                f", saturated: {found['gateway_cpu_ms_per_call_saturated']:.3f} ms]"
                if "gateway_cpu_ms_per_call_saturated" in found
                else "]"
            )
        )
    if "throughput_ratio_c16" in found:
        lines.append(f"  throughput gateway/direct @16: {found['throughput_ratio_c16']:.2f}")
    if "throughput_ratio_saturated" in found:
        ratio = found["throughput_ratio_saturated"]
        model = found.get("throughput_ratio_saturated_cpu_model", NAN)
        lines.append(
            f"  throughput gateway/direct @saturated ({width} upstreams x 16 connections): {ratio:.2f}"
            f"  [CPU model: {model:.2f}]"
        )
    if "added_p50_ms_c1" in found:
        p50 = found["added_p50_ms_c1"]
        lines.append(f"  added p50 @1: {p50:+.3f} ms (target <= {P50_TARGET_MS}: {_verdict(p50, P50_TARGET_MS)})")
        lines.append(f"  added p99 @1: {found['added_p99_ms_c1']:+.3f} ms")
    return "\n".join(lines)


def gateway_findings(rig: Rig) -> list[str]:
    """Anything odd: unexpected gateway/upstream stderr lines, audit records that are not a plain allow/200."""
    notes: list[str] = []
    try:
        lines = rig.gateway_stderr.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    odd = [line for line in lines if line.strip() and not any(k in line for k in KNOWN_STDERR)]
    if odd:
        notes.append(f"gateway stderr: {len(odd)} unexpected line(s) ({rig.gateway_stderr}), first ones:")
        notes += [f"    {line[:300]}" for line in odd[:12]]
    for log in rig.echo_stderr:
        try:
            text = log.read_text(errors="replace").strip()
        except OSError:
            text = ""
        if text:
            first = text.splitlines()[:5]
            notes.append(f"upstream stderr ({log.name}): {len(text.splitlines())} line(s), first ones:")
            notes += [f"    {line[:300]}" for line in first]
    outcomes: Counter[str] = Counter()
    total = 0
    try:
        with rig.audit_log.open("rb") as handle:
            for raw in handle:
                total += 1
                if b'"decision":"allow"' in raw and b'"status":200' in raw:
                    continue
                try:
                    record = json.loads(raw)
                except ValueError:
                    outcomes["unparseable audit line"] += 1
                    continue
                key = f"{record.get('method')} {record.get('decision')} {record.get('reason')} {record.get('status')}"
                outcomes[key] += 1
    except OSError as exc:
        notes.append(f"audit log unreadable: {exc}")
    odd_total = sum(outcomes.values())
    notes.append(f"audit log: {total} record(s), {odd_total} not 'allow/200'")
    for key, count in outcomes.most_common(10):
        why = "  (expected: the load generator drops in-flight calls when a run ends)" if "disconnect" in key else ""
        notes.append(f"    {count} x {key}{why}")
    return notes


SECTIONS: Final = (
    ("oauth", "authorization", "~60 s, quick ~20 s; own plan"),
    ("vault", "vault", "~25 s, quick ~10 s; own plan"),
    ("content", "content-defence", "~20 s, quick ~8 s"),
    ("sandbox", "stdio sandbox", "~40 s, quick ~15 s"),
)
"""The sections after the hop: each has ``--<name>-only`` and ``--no-<name>``."""


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="shorter runs, no per-run warm-up (~1 min)")
    parser.add_argument("--json", type=Path, help="also write figures, summary and every run to this file")
    parser.add_argument("--reps", type=int, help="repetitions, order alternated (default 3)")
    parser.add_argument("--seconds", type=int, help="seconds per measured run (default 5, quick 2)")
    parser.add_argument("--warmup", type=int, help="seconds of warm-up before each run (default 1, quick 0)")
    parser.add_argument("--saturate", type=int, default=2, help="upstreams driven at once when saturated (2)")
    parser.add_argument("--no-handshake", action="store_true", help="skip the handshake-era scenarios")
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto", help="load generator")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, audit, config)")
    for section, what, duration in SECTIONS:
        group = parser.add_mutually_exclusive_group()
        group.add_argument(f"--{section}-only", action="store_true", help=f"only the {what} section ({duration})")
        group.add_argument(f"--no-{section}", action="store_true", help=f"skip the {what} section")
    args = parser.parse_args(argv)
    args.reps = args.reps or 3
    args.seconds = args.seconds or (2 if args.quick else 5)
    args.warmup = args.warmup if args.warmup is not None else (0 if args.quick else 1)
    if args.reps < 1 or args.seconds < 1 or args.warmup < 0 or args.saturate < 1:
        parser.error("--reps, --seconds and --saturate must be >= 1, --warmup >= 0")
    return args


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # so that `finally` ends the children
    scenarios = [
        Scenario("modern c=1", "modern", 1, 1),
        Scenario("modern c=16", "modern", 16, 1),
        Scenario("modern saturated", "modern", 16, args.saturate),
    ]
    if not args.no_handshake:
        scenarios += [Scenario("handshake c=1", "handshake", 1, 1), Scenario("handshake c=16", "handshake", 16, 1)]
    modes: list[mcp.Mode] = ["modern"] if args.no_handshake else ["modern", "handshake"]
    estimate = args.reps * len(scenarios) * 2 * (args.seconds + args.warmup)
    tool: Tool | None = None
    only = any(getattr(args, f"{section}_only") for section, _, _ in SECTIONS)
    runs = {
        section: getattr(args, f"{section}_only") or not (only or getattr(args, f"no_{section}"))
        for section, _, _ in SECTIONS
    }
    run_oauth, run_vault, run_content, run_sandbox = (runs[s] for s in ("oauth", "vault", "content", "sandbox"))
    if not only:
        if estimate > TOKEN_LIFETIME - 300:
            print(f"scripts/bench: ~{estimate} s of runs outlives the {TOKEN_LIFETIME} s token", file=sys.stderr)
            return 2
        try:
            tool = pick_tool(args.client)
        except RuntimeError as exc:
            print(f"scripts/bench: {exc}", file=sys.stderr)
            return 1
    python = sys.executable
    workdir = Path(tempfile.mkdtemp(prefix="mcp-bastion-bench-"))
    started = time.monotonic()
    document: dict[str, Any] = {}
    try:
        if tool is not None:
            document = hop(args, tool, python, workdir, scenarios, modes, estimate)
        if run_oauth:
            from bench import oauth  # imports the gateway's authorization server: only when it runs

            report = oauth.run(python, workdir / "oauth", quick=args.quick)
            print()
            print(report.render())
            document["authorization"] = report.document()
            environment = document.setdefault("environment", {})
            environment.setdefault("cores", os.cpu_count())
            environment.setdefault("python", platform.python_version())
        if run_vault:
            from bench import vault  # imports the vault backends' clients: only when it runs

            vault_report = vault.run(workdir / "vault", quick=args.quick)
            print()
            print(vault_report.render())
            document["vault"] = vault_report.document()
            environment = document.setdefault("environment", {})
            environment.setdefault("cores", os.cpu_count())
            environment.setdefault("python", platform.python_version())
        if run_content:
            from bench import content  # imports the detector and the inspect stage: only when it runs

            figures = content.run(quick=args.quick)
            print()
            print(content.render(figures))
            document["content"] = content.document(figures)
        if run_sandbox:
            from bench import sandbox  # spawns bwrap: only when it runs

            sides = sandbox.run(quick=args.quick)
            print()
            print(sandbox.render(sides))
            document["sandbox"] = sandbox.document(sides)
        print(f"bench: done in {time.monotonic() - started:.0f} s")
        if args.json:
            args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
            print(f"bench: figures written to {args.json}")
        return 0
    except (RuntimeError, OSError) as exc:
        print(f"scripts/bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("scripts/bench: interrupted", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            _progress(f"bench: work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def hop(
    args: argparse.Namespace,
    tool: Tool,
    python: str,
    workdir: Path,
    scenarios: Sequence[Scenario],
    modes: Sequence[mcp.Mode],
    estimate: int,
) -> dict[str, Any]:
    """The hop benchmark: runs, prints its table and headlines, returns its part of the JSON document."""
    children = Children()
    try:
        _progress(f"bench: starting {args.saturate} echo upstream(s) and the gateway in {workdir}")
        rig = start_rig(python, workdir, args.saturate, children)
        prepare(rig, modes, args.saturate)
        generator = Generator(tool, python, workdir)
        _progress(
            f"bench: load generator {tool}; {args.reps} reps x {len(scenarios)} scenarios x 2 targets, "
            f"{args.seconds} s each (+{args.warmup} s warm-up), ~{estimate} s"
        )
        for mode in modes:  # one initial warm-up per target: caches, connections, first-call paths
            for target in TARGETS:
                generator.run([Load(rig.request(target, 0, mode), 16)], 1)
        runs: list[Run] = []
        for rep in range(args.reps):
            order = TARGETS if rep % 2 == 0 else TARGETS[::-1]
            for scenario in scenarios:
                for target in order:
                    run = measure(rig, generator, scenario, target, rep, args.seconds, args.warmup)
                    runs.append(run)
                    errs = f", errors {run.errors}" if run.errors else ""
                    _progress(
                        f"  rep {rep + 1}/{args.reps} {scenario.key:<17} {target:<7} {run.rps:7.0f} req/s "
                        f"p50 {run.p50_ms:6.2f} ms  gw {run.gateway_cpu_ms:.3f} up {run.upstream_cpu_ms:.3f} "
                        f"ms/call  other {run.other_cores:.2f} cores{errs}"
                    )
        rows = summarize(runs, scenarios)
        found = {mode: figures(runs, rows, mode) for mode in modes}
        notes = gateway_findings(rig)
        contention = statistics.fmean(r.other_cores for r in runs)
        print()
        print(
            f"mcp-bastion hop benchmark: {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"{tool_version(tool)}; medians of {args.reps} reps x {args.seconds} s; TLS + JWT on"
        )
        print(render_table(rows))
        print()
        for mode in modes:
            print(render_headline(found[mode], mode, args.saturate))
        print()
        if contention > 0.15:
            print(f"note: other processes used {contention:.2f} cores on average during the runs: figures are noisy")
        for note in notes:
            print(note)
        return {
            "figures": found,
            "targets": {"gateway_cpu_ms_per_call": CPU_TARGET_MS, "added_p50_ms_c1": P50_TARGET_MS},
            "summary": [asdict(row) for row in rows],
            "runs": [asdict(run) for run in runs],
            "notes": notes,
            "environment": {
                "cores": os.cpu_count(),
                "python": platform.python_version(),
                "load_generator": tool_version(tool),
                "other_cores_mean": contention,
            },
            "settings": {
                "reps": args.reps,
                "seconds": args.seconds,
                "warmup": args.warmup,
                "saturate": args.saturate,
                "quick": args.quick,
            },
        }
    finally:
        children.close()
