"""Run the official MCP conformance suite's server scenarios against a URL.

Uses `@modelcontextprotocol/conformance` and the Node 22 binary that
`scripts/conformance-setup` installs into `.cache/conformance/`. The CLI is
`node …/conformance/dist/index.js server --url URL [--scenario NAME | --suite all]
-o DIR`; it writes `DIR/server-NAME-TIMESTAMP/checks.json` per scenario (checks with
status SUCCESS, FAILURE, WARNING or INFO) and exits 1 when any check is a FAILURE.
A scenario passes here by the same rule: no FAILURE check; WARNINGs go in the detail.

All scenarios first run in one CLI process (~1.5 s); named scenarios, and any the
batch did not finish within the time bound, run one CLI process each (~0.4 s of
Node start-up apiece), `--jobs` at a time, each bounded by `--timeout` seconds.

CLI:    python tests/conformance/run.py --url URL [--scenario NAME ...] [--json OUT]
                [--header 'Name: value' ...] [--ca-file PEM] [--timeout S] [--jobs N]
        Prints `PASS name` / `FAIL name: reason` per scenario and a summary; exits 0
        whatever the verdicts (2 only when the suite is not installed).
Import: run_scenarios(url, scenarios, headers=None, ca_file=None) -> dict[str, Result]

The CLI has no option for extra headers or a CA. For headers (e.g. `Authorization:
Bearer …`) or an https URL, a small ES module is preloaded with `node --import`: it
installs an undici global dispatcher (shared by the MCP TypeScript client, the
scenarios' raw `fetch` calls and the DNS-rebinding scenario's `undici.request`) that
adds the headers to requests to the target origin only, and checks the server
certificate against the target host even when a scenario overrides the Host header.
The CA itself is trusted through `NODE_EXTRA_CA_CERTS`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
CACHE_DIR: Final = REPO_ROOT / ".cache" / "conformance"
NODE: Final = CACHE_DIR / "node_modules" / ".bin" / "node"
CLI: Final = CACHE_DIR / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
PRELOAD: Final = CACHE_DIR / "bastion-inject-headers.mjs"
COMPILE_CACHE: Final = CACHE_DIR / "compile-cache"

DEFAULT_TIMEOUT: Final = 30.0
DEFAULT_JOBS: Final = 4
DETAIL_LIMIT: Final = 400

HEADERS_ENV: Final = "BASTION_CONFORMANCE_HEADERS"
ORIGIN_ENV: Final = "BASTION_CONFORMANCE_ORIGIN"

# Preloaded into the CLI's Node process when extra headers are requested. Lives in
# .cache/conformance so that `undici` resolves to the copy the CLI itself uses.
PRELOAD_SOURCE: Final = """\
// Written by tests/conformance/run.py; preloaded with `node --import`.
// Installs an undici global dispatcher (undici's setGlobalDispatcher also sets the
// one Node's built-in fetch uses) that, for requests to the origin in
// $BASTION_CONFORMANCE_ORIGIN only:
// - adds the headers in $BASTION_CONFORMANCE_HEADERS (a JSON object);
// - checks the server certificate's identity against that origin's host, not against
//   an overridden Host header (undici derives the TLS servername from the Host header,
//   so the DNS-rebinding scenario's `Host: evil.example.com` would otherwise fail the
//   TLS handshake instead of reaching the server's Host/Origin validation).
import tls from 'node:tls';
import { Agent, Pool, setGlobalDispatcher } from 'undici';

const extra = JSON.parse(process.env.BASTION_CONFORMANCE_HEADERS || '{}');
const target = process.env.BASTION_CONFORMANCE_ORIGIN || '';
const targetHost = target ? new URL(target).hostname.replace(/^\\[|\\]$/g, '') : '';
const replaced = new Set(Object.keys(extra).map((k) => k.toLowerCase()));

function pairs(headers) {
  if (headers == null) return [];
  if (Array.isArray(headers)) {
    if (headers.length > 0 && Array.isArray(headers[0])) return headers;
    const out = [];
    for (let i = 0; i + 1 < headers.length; i += 2) out.push([headers[i], headers[i + 1]]);
    return out;
  }
  if (typeof headers[Symbol.iterator] === 'function') return [...headers];
  return Object.entries(headers);
}

function merge(headers) {
  const flat = [];
  const add = (k, v) => {
    if (Array.isArray(v)) for (const item of v) flat.push(String(k), String(item));
    else if (v !== undefined && v !== null) flat.push(String(k), String(v));
  };
  for (const [k, v] of pairs(headers)) if (!replaced.has(String(k).toLowerCase())) add(k, v);
  for (const [k, v] of Object.entries(extra)) add(k, v);
  return flat;
}

function originOf(value) {
  try {
    return new URL(String(value)).origin;
  } catch {
    return '';
  }
}

const pinIdentity = { checkServerIdentity: (_servername, cert) => tls.checkServerIdentity(targetHost, cert) };
const factory = (origin, opts) =>
  originOf(origin) === target ? new Pool(origin, { ...opts, connect: { ...opts.connect, ...pinIdentity } })
    : new Pool(origin, opts);
const addHeaders = (dispatch) => (opts, handler) => {
  if (originOf(opts.origin) !== target || replaced.size === 0) return dispatch(opts, handler);
  return dispatch({ ...opts, headers: merge(opts.headers) }, handler);
};
setGlobalDispatcher(new Agent({ factory }).compose(addHeaders));
"""


@dataclass(frozen=True)
class Result:
    """Outcome of one scenario."""

    passed: bool
    detail: str
    warnings: tuple[str, ...] = field(default=())
    seconds: float = 0.0


class SetupError(RuntimeError):
    """The conformance suite is not installed."""


def _check_installed() -> None:
    if not (NODE.exists() and CLI.exists()):
        raise SetupError(f"conformance suite not installed in {CACHE_DIR}: run scripts/conformance-setup")


def list_scenarios() -> list[str]:
    """Every server scenario of the installed suite (active and pending), in the CLI's order."""
    _check_installed()
    out = subprocess.run(
        [str(NODE), str(CLI), "list", "--server"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    names = []
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("- "):
            names.append(line[2:].split(" ", 1)[0])
    if not names:
        raise SetupError(f"could not parse the server scenario list from:\n{out}")
    return names


def _origin(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    default = (parts.scheme == "https" and port == 443) or (parts.scheme == "http" and port == 80)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + ("" if default else f":{port}")


def _write_preload() -> None:
    if PRELOAD.exists() and PRELOAD.read_text() == PRELOAD_SOURCE:
        return
    fd, tmp = tempfile.mkstemp(dir=CACHE_DIR, prefix=".preload-", suffix=".mjs")
    with os.fdopen(fd, "w") as f:
        f.write(PRELOAD_SOURCE)
    os.replace(tmp, PRELOAD)


def _shorten(text: str, limit: int = DETAIL_LIMIT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _verdict(checks: list[dict[str, Any]], returncode: int, stderr: str, seconds: float) -> Result:
    def describe(check: dict[str, Any]) -> str:
        return f"{check.get('id', '?')}: {check.get('errorMessage') or check.get('description') or ''}".strip()

    failures = [describe(c) for c in checks if c.get("status") == "FAILURE"]
    warnings = tuple(describe(c) for c in checks if c.get("status") == "WARNING")
    successes = sum(1 for c in checks if c.get("status") == "SUCCESS")
    if failures:
        return Result(False, _shorten("; ".join(failures)), warnings, seconds)
    if returncode != 0:
        return Result(False, _shorten(f"CLI exited {returncode}: {stderr}"), warnings, seconds)
    detail = f"{successes} check(s) passed"
    if warnings:
        detail += f", {len(warnings)} warning(s): " + "; ".join(warnings)
    return Result(True, _shorten(detail), warnings, seconds)


def _node_invocation(
    url: str, headers: Mapping[str, str] | None, ca_file: str | None
) -> tuple[list[str], dict[str, str]]:
    """The `node … index.js` command prefix and environment for one CLI run."""
    env = dict(os.environ)
    env.pop("NODE_OPTIONS", None)
    env["NODE_COMPILE_CACHE"] = str(COMPILE_CACHE)  # ~20% faster CLI start-up
    command = [str(NODE)]
    if headers or urlsplit(url).scheme == "https":
        command += ["--import", PRELOAD.as_uri()]
        env[HEADERS_ENV] = json.dumps(dict(headers or {}))
        env[ORIGIN_ENV] = _origin(url)
    if ca_file:
        env["NODE_EXTRA_CA_CERTS"] = str(Path(ca_file).resolve())
    return [*command, str(CLI), "server", "--url", url], env


def _invoke(command: list[str], env: dict[str, str], cwd: str, timeout: float) -> tuple[int | None, str]:
    """Run the CLI; returns (exit code, stderr), exit code None when killed on timeout."""
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        return None, stderr
    return proc.returncode, stderr


_RESULT_DIR = re.compile(r"^server-(?P<name>.+)-\d{4}-\d{2}-\d{2}T[\d-]+Z$")


def _collected_checks(out_dir: str) -> dict[str, list[dict[str, Any]]]:
    """`checks.json` of every scenario the CLI finished, from `-o DIR` (`server-NAME-TIMESTAMP/`)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(Path(out_dir).glob("server-*/checks.json")):
        match = _RESULT_DIR.match(path.parent.name)
        if match:
            found[match["name"]] = json.loads(path.read_text())
    return found


def run_scenario(
    url: str,
    scenario: str,
    headers: Mapping[str, str] | None = None,
    ca_file: str | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> Result:
    """Run one server scenario against `url` in its own CLI process, bounded by `timeout` seconds."""
    _check_installed()
    _write_preload()
    command, env = _node_invocation(url, headers, ca_file)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="conformance-") as out_dir:
        code, stderr = _invoke([*command, "--scenario", scenario, "-o", out_dir], env, out_dir, timeout)
        seconds = time.monotonic() - started
        if code is None:
            return Result(False, f"timed out after {timeout:g}s", (), seconds)
        checks = _collected_checks(out_dir).get(scenario)
    if checks is None:
        reason = stderr.split("Available server scenarios")[0]  # the CLI lists them all on a bad name
        return Result(False, _shorten(f"no checks.json (exit {code}): {reason}"), (), seconds)
    return _verdict(checks, code, stderr, seconds)


def _run_all_at_once(
    url: str, headers: Mapping[str, str] | None, ca_file: str | None, timeout: float
) -> dict[str, Result]:
    """Every server scenario in one CLI process (`--suite all`): ~1.5 s instead of ~10 s.

    Returns the scenarios that finished; if the process is killed after `timeout`
    seconds, the caller reruns the missing ones one by one.
    """
    command, env = _node_invocation(url, headers, ca_file)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="conformance-") as out_dir:
        # The batch's exit code covers every scenario at once: each is judged by its own checks.
        _invoke([*command, "--suite", "all", "-o", out_dir], env, out_dir, timeout)
        found = _collected_checks(out_dir)
    seconds = (time.monotonic() - started) / max(1, len(found))  # an average: the batch has no split
    return {name: _verdict(checks, 0, "", seconds) for name, checks in found.items()}


def run_scenarios(
    url: str,
    scenarios: Sequence[str] | None,
    headers: Mapping[str, str] | None = None,
    ca_file: str | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    jobs: int = DEFAULT_JOBS,
) -> dict[str, Result]:
    """Run the named server scenarios (all of them when `scenarios` is None) against `url`.

    `headers` are added to every request to the URL's origin (e.g. Authorization);
    `ca_file` is a PEM bundle Node trusts in addition to its own roots. All
    scenarios run first in one CLI process bounded by `timeout` seconds; named
    scenarios, and any the batch did not finish, run in their own processes, `jobs`
    at a time, each bounded by `timeout` seconds. Returns results in scenario order.
    """
    _check_installed()
    _write_preload()
    names = list(scenarios) if scenarios is not None else list_scenarios()
    done: dict[str, Result] = {}
    if scenarios is None:
        done = _run_all_at_once(url, headers, ca_file, timeout)
    missing = [name for name in names if name not in done]
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {name: pool.submit(run_scenario, url, name, headers, ca_file, timeout=timeout) for name in missing}
        done.update({name: future.result() for name, future in futures.items()})
    return {name: done[name] for name in names}


def _parse_header(value: str) -> tuple[str, str]:
    name, sep, content = value.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected 'Name: value', got {value!r}")
    return name.strip(), content.strip()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the MCP conformance suite's server scenarios.")
    parser.add_argument("--url", required=True, help="MCP endpoint, e.g. http://127.0.0.1:8000/mcp")
    parser.add_argument("--scenario", action="append", help="scenario to run (repeatable; default: all)")
    parser.add_argument("--json", type=Path, help="write {scenario: {passed, detail}} to this file")
    parser.add_argument("--header", action="append", type=_parse_header, default=[], help="'Name: value'")
    parser.add_argument("--ca-file", help="extra CA bundle (PEM) for an https URL")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per scenario")
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS, help="scenarios run in parallel")
    ns = parser.parse_args(argv)

    started = time.monotonic()
    try:
        results = run_scenarios(
            ns.url, ns.scenario, dict(ns.header) or None, ns.ca_file, timeout=ns.timeout, jobs=ns.jobs
        )
    except (SetupError, subprocess.SubprocessError, ValueError) as exc:
        print(f"conformance: {exc}", file=sys.stderr)
        return 2  # the suite could not run at all; scenario failures still exit 0
    elapsed = time.monotonic() - started

    for name, result in results.items():
        print(f"PASS {name}" if result.passed else f"FAIL {name}: {result.detail}")
    passed = sum(r.passed for r in results.values())
    warned = sum(1 for r in results.values() if r.passed and r.warnings)
    print(
        f"{passed}/{len(results)} scenarios passed, {len(results) - passed} failed"
        f" ({warned} passed with warnings) in {elapsed:.1f}s"
    )
    if ns.json is not None:
        payload = {name: {"passed": r.passed, "detail": r.detail} for name, r in results.items()}
        ns.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
