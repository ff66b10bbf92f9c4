"""The authorization side: token endpoint grants per second, and the gateway's cost of verifying a token.

    scripts/bench --oauth-only [--quick] [--json FILE] [--keep]

1. Grants over HTTPS against a running gateway (`mcp-bastion serve`: TLS with its local CA, the built-in
   authorization server on SQLite in the state directory, a stdio echo upstream), driven by an asyncio
   client in this process on keep-alive connections, concurrency 1 and 8. Gateway CPU per grant comes from
   /proc (every thread of the gateway process, aiosqlite's included); "client" is this process.
   - authorization_code: codes prepared before the gateway starts by the authorization server's own core
     (`begin` + `approve`: the front channel without the HTML pages) against the same database, for a
     client registered by RFC 7591 registration. Codes live 60 s, so each concurrency redeems a fixed
     number of them, once, right after the gateway starts;
   - refresh_token: every request presents a refresh token never used before (each grant rotates it): a
     pool of families (one per redeemed code) in which each successor goes back to the end of the queue;
   - client_credentials: a confidential client registered with `mcp-bastion clients add --confidential
     --client-credentials`, authenticating with `client_secret_basic`.
2. Verification in this process, no HTTP, on the gateway built by `app.build_gateway` from the same settings
   and state: its own verifier (cache on, revocation check on), and variants built the same way with the
   cache off (every call decodes and checks the ES256 signature) and without the revocation check; the
   revocation check alone (a SQLite read on every call, cached token or not); and two floors that locate
   its cost: one `Database.read()` round trip (`SELECT 1`), and the same revocation SELECT through the
   standard library's synchronous sqlite3.

Setup (clients, codes) and the in-process part use the gateway's own components, so the figures follow the
code; nothing here asserts a figure. The plan is fixed per mode (`Plan.for_mode`): about 50 s, 18 s quick.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import math
import os
import platform
import secrets
import socket
import sqlite3
import ssl
import statistics
import subprocess
import sys
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar
from urllib.parse import parse_qs, quote_plus, urlencode, urlsplit

import orjson
from sqlalchemy import exists, select, text
from sqlalchemy.dialects import sqlite as sqlite_dialect

from bench import mcp
from bench.procs import Children, machine_busy_seconds, popen, process_cpu_seconds, wait_until
from mcp_bastion.app import Gateway as BastionGateway
from mcp_bastion.app import build_gateway
from mcp_bastion.errors import BastionError
from mcp_bastion.oauth.access_token import DEFAULT_CACHE_SIZE, AccessClaims, AccessTokenVerifier, TrustedIssuer
from mcp_bastion.oauth.server import AuthorizationServer
from mcp_bastion.oauth.service import OAuthError, User
from mcp_bastion.pipeline.authenticate import Authenticate, TokenVerifier
from mcp_bastion.settings import Settings, load_settings
from mcp_bastion.storage.models import FamilyRow, RevokedJTIRow
from mcp_bastion.web import Authorization

T = TypeVar("T")

UPSTREAM: Final = "echo"
SCOPE: Final = "echo.call"
REDIRECT_URI: Final = "http://127.0.0.1/callback"
USER: Final = User(id="bench-user", username="bench")
CONCURRENCY: Final = (1, 8)
GRANTS: Final = ("authorization_code", "refresh_token", "client_credentials")
WARM_CODES: Final = 10
"""Codes redeemed before any measurement: first TLS handshake, first-call code paths, the sanity check."""
CODE_LIFETIME_MARGIN: Final = 50.0
"""Codes live 60 s; past this many seconds after preparing them the code runs would measure refusals."""
RESPONSE_TIMEOUT: Final = 10.0
KNOWN_STDERR: Final = ("TLS: using the local CA", "INSECURE: ", "INFO alembic.")
"""Gateway log lines expected at every start (the local CA, the schema migration)."""


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when installed: the gateway serves on it, so in-process figures use it too."""
    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(coroutine)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _percentile_ms(sorted_ns: Sequence[int], pct: float) -> float:
    if not sorted_ns:
        return math.nan
    index = min(len(sorted_ns) - 1, max(0, math.ceil(pct / 100 * len(sorted_ns)) - 1))
    return sorted_ns[index] / 1e6


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


# -- plan ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    seconds: float
    """Measured seconds of each time-bounded run (refresh_token, client_credentials)."""
    warmup: float
    """Seconds of warm-up on the same connections before each time-bounded run."""
    reps: int
    codes: Mapping[int, int]
    """Concurrency -> codes redeemed by its authorization_code run."""
    verify_seconds: float
    """Seconds per batch of in-process verification calls."""
    verify_batches: int

    @classmethod
    def for_mode(cls, quick: bool) -> Plan:
        if quick:
            return cls(seconds=1.5, warmup=0.3, reps=1, codes={1: 40, 8: 80}, verify_seconds=0.09, verify_batches=5)
        return cls(seconds=3.0, warmup=0.5, reps=2, codes={1: 150, 8: 300}, verify_seconds=0.13, verify_batches=7)


# -- setup: configuration, clients and codes, before the gateway starts ----------------------------------------


def write_config(workdir: Path, python: str, port: int) -> Path:
    state = workdir / "state"
    policy = workdir / "bench.cedar"
    upstream = [python, "-m", "mcp_bastion.demo.echo", "--stdio"]
    config = (
        f'[server]\nhost = "127.0.0.1"\nport = {port}\nstate_dir = {json.dumps(str(state))}\n\n'
        f"[upstreams.{UPSTREAM}]\ncommand = {json.dumps(upstream)}\n"
        f'scopes = {{ "{SCOPE}" = "Call the echo tool" }}\n'
        f'[upstreams.{UPSTREAM}.tools.echo]\nscopes = ["{SCOPE}"]\n'
        f"[policy]\nfiles = [{json.dumps(str(policy))}]\n"
        '[policy.rate_limits]\nper_user = "1000000/second"\nper_tool = "1000000/second"\n'
    )
    policy.write_text(
        "permit(principal, action, resource);\n",
        encoding="utf-8",
    )
    path = workdir / "gateway.toml"
    path.write_text(config, encoding="utf-8")
    return path


@contextlib.asynccontextmanager
async def composed(settings: Settings) -> AsyncIterator[tuple[BastionGateway, Authorization]]:
    """The gateway exactly as `mcp-bastion serve` builds it (same key files, same database), not serving:
    its authorization server started (schema migrated), its verifier at hand."""
    gateway = build_gateway(settings)
    try:
        authorization = gateway.authorization
        if authorization is None:
            raise RuntimeError("oauth.enabled is off: no authorization server to measure")
        await authorization.startup()
        try:
            yield gateway, authorization
        finally:
            await authorization.shutdown()
    finally:
        gateway.audit.close()


def gateway_verifier(gateway: BastionGateway) -> TokenVerifier:
    """The verifier the gateway's `Authenticate` stage calls on every request."""
    for stage in gateway.gate.admission:
        if isinstance(stage, Authenticate):
            return stage.verifier
    raise RuntimeError("the gateway has no Authenticate stage")


def basic(client_id: str, secret: str) -> str:
    """RFC 6749 §2.3.1: form-encode both, then HTTP Basic."""
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode()


@dataclass
class Prepared:
    resource: str
    public_client: str
    """Registered by RFC 7591 registration: public (`none`), authorization_code + refresh_token."""
    code_verifier: str
    codes: list[str]
    machine_client: str
    """Registered with `mcp-bastion clients add --confidential --client-credentials`."""
    machine_secret: str
    prepared_at: float
    seconds: float

    def code_form(self, code: str) -> dict[str, str]:
        return {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": self.code_verifier,
            "client_id": self.public_client,
        }

    def machine_form(self) -> dict[str, str]:
        return {"grant_type": "client_credentials", "resource": self.resource, "scope": SCOPE}


async def issue_code(server: AuthorizationServer, client_id: str, challenge: str, resource: str) -> str:
    """/authorize, then the user's consent: the code from the redirect (what the pages do, without HTML)."""
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT_URI,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "resource": resource,
        "scope": SCOPE,
        "state": "bench",
    }
    pending = await server.begin(query)
    url = await server.approve(pending.id, USER, frozenset(pending.scopes))
    return parse_qs(urlsplit(url).query)["code"][0]


def _challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


def _clients_add_argv(python: str, config: Path) -> list[str]:
    argv = [python, "-m", "mcp_bastion", "clients", "add", "--name", "bench machine client"]
    return [*argv, "--confidential", "--client-credentials", "--scope", SCOPE, "--config", str(config)]


def _parse_clients_add(out: bytes, err: bytes, code: int) -> tuple[str, str]:
    found: dict[str, str] = {}
    for line in out.decode(errors="replace").splitlines():
        name, _, value = line.partition(":")
        found[name.strip()] = value.strip()
    if code != 0 or not found.get("client_id") or not found.get("client_secret"):
        raise RuntimeError(f"mcp-bastion clients add failed (exit {code}): {err.decode(errors='replace').strip()}")
    return found["client_id"], found["client_secret"]


async def prepare(settings: Settings, config: Path, python: str, codes: int) -> Prepared:
    started = time.monotonic()
    async with composed(settings) as (_, authorization):
        # The schema exists now: the CLI may open the same database while the codes are made.
        cli = popen(_clients_add_argv(python, config), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            server = authorization.server
            resource = next(iter(server.resources))
            registered = await server.register(
                {
                    "client_name": "bench public client",
                    "redirect_uris": [REDIRECT_URI],
                    "grant_types": ["authorization_code", "refresh_token"],
                    "response_types": ["code"],
                    "token_endpoint_auth_method": "none",
                    "scope": SCOPE,
                },
                None,
            )
            public = registered["client_id"]
            assert isinstance(public, str)
            verifier = secrets.token_urlsafe(48)
            challenge = _challenge(verifier)
            issued = [await issue_code(server, public, challenge, resource) for _ in range(codes)]
        finally:
            out, err = cli.communicate(timeout=60)
    machine, secret = _parse_clients_add(out, err, cli.returncode)
    return Prepared(
        resource=resource,
        public_client=public,
        code_verifier=verifier,
        codes=issued,
        machine_client=machine,
        machine_secret=secret,
        prepared_at=time.monotonic(),
        seconds=time.monotonic() - started,
    )


# -- the gateway ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Served:
    pid: int
    base: str
    cafile: Path
    stderr: Path
    token_path: str
    """From the RFC 8414 metadata document (`token_endpoint`)."""
    host: str
    port: int

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cafile))


def start_gateway(python: str, config: Path, settings: Settings, workdir: Path, children: Children) -> Served:
    stderr = workdir / "gateway.stderr"
    with stderr.open("wb") as err:
        proc = children.add(
            popen([python, "-m", "mcp_bastion", "serve", "--config", str(config)], stdout=err, stderr=err)
        )
    base = settings.server.base_url
    cafile = settings.server.state_dir / "tls" / "ca.crt"

    def healthy() -> bool:
        if not cafile.exists():
            return False
        try:
            return mcp.request("GET", f"{base}/healthz", {}, cafile=cafile, timeout=2).status == 200
        except OSError:
            return False

    wait_until(healthy, 30, "gateway", proc)
    answer = mcp.request("GET", f"{base}/.well-known/oauth-authorization-server", {}, cafile=cafile)
    if answer.status != 200:
        raise RuntimeError(f"authorization server metadata: HTTP {answer.status}: {answer.body[:300]!r}")
    token_endpoint = orjson.loads(answer.body)["token_endpoint"]
    parts = urlsplit(token_endpoint)
    return Served(
        pid=proc.pid,
        base=base,
        cafile=cafile,
        stderr=stderr,
        token_path=parts.path,
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 443,
    )


def sanity_check(gateway: Served, prepared: Prepared, code: str) -> None:
    """One code exchange over HTTPS, and a `tools/call` through the gateway with the access token it gave."""
    body = urlencode(prepared.code_form(code)).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    answer = mcp.request("POST", f"{gateway.base}{gateway.token_path}", headers, body, cafile=gateway.cafile)
    if answer.status != 200:
        raise RuntimeError(f"token endpoint: HTTP {answer.status}: {answer.body[:300]!r}")
    token = orjson.loads(answer.body)["access_token"]
    url = f"{gateway.base}/mcp/{UPSTREAM}"
    mcp.check_echo(url, "modern", mcp.call_headers("modern", token), gateway.cafile)


def gateway_findings(gateway: Served) -> list[str]:
    try:
        lines = gateway.stderr.read_text(errors="replace").splitlines()
    except OSError:
        return []
    odd = [line for line in lines if line.strip() and not any(k in line for k in KNOWN_STDERR)]
    if not odd:
        return []
    notes = [f"authorization: gateway stderr: {len(odd)} unexpected line(s) ({gateway.stderr}), first ones:"]
    return notes + [f"    {line[:300]}" for line in odd[:12]]


# -- the token endpoint client ------------------------------------------------------------------------------------


class Grants(Protocol):
    """What one run of one grant type sends, and what it does with each answer."""

    name: str

    def take(self) -> tuple[dict[str, str], str | None] | None:
        """The next form and Authorization header; None when there is nothing left to send."""
        ...

    def granted(self, payload: Mapping[str, Any]) -> None:
        """A 200 answer with an access token."""
        ...


class CodeGrants:
    name = "authorization_code"

    def __init__(self, prepared: Prepared, codes: Sequence[str], families: deque[str]) -> None:
        self._prepared = prepared
        self._codes = list(codes)
        self._families = families

    def take(self) -> tuple[dict[str, str], str | None] | None:
        return (self._prepared.code_form(self._codes.pop()), None) if self._codes else None

    def granted(self, payload: Mapping[str, Any]) -> None:
        refresh = payload.get("refresh_token")
        if isinstance(refresh, str):
            self._families.append(refresh)


class RefreshGrants:
    """A queue of families: each request takes the oldest family's current token, its successor goes last."""

    name = "refresh_token"

    def __init__(self, client_id: str, families: deque[str]) -> None:
        self._client_id = client_id
        self._families = families

    def take(self) -> tuple[dict[str, str], str | None] | None:
        if not self._families:
            return None
        token = self._families.popleft()
        return {"grant_type": "refresh_token", "refresh_token": token, "client_id": self._client_id}, None

    def granted(self, payload: Mapping[str, Any]) -> None:
        refresh = payload.get("refresh_token")
        if isinstance(refresh, str):
            self._families.append(refresh)


class ClientCredentialsGrants:
    name = "client_credentials"

    def __init__(self, prepared: Prepared) -> None:
        self._form = prepared.machine_form()
        self._authorization = basic(prepared.machine_client, prepared.machine_secret)

    def take(self) -> tuple[dict[str, str], str | None] | None:
        return self._form, self._authorization

    def granted(self, payload: Mapping[str, Any]) -> None:
        return None


@dataclass
class GrantRun:
    grant: str
    concurrency: int
    rep: int
    grants: int
    seconds: float
    grants_per_s: float
    errors: dict[str, int]
    p50_ms: float
    p99_ms: float
    gateway_cpu_ms: float
    """Gateway process CPU (all threads) per successful grant."""
    client_cpu_ms: float
    other_cores: float


@dataclass
class _Sample:
    at: float
    gateway: float
    client: float
    machine: float

    @classmethod
    def take(cls, pid: int) -> _Sample:
        return cls(time.monotonic(), process_cpu_seconds(pid), time.process_time(), machine_busy_seconds())


@dataclass
class _Tally:
    latencies_ns: list[int] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    grants: int = 0


def _request_bytes(gateway: Served, form: Mapping[str, str], authorization: str | None) -> bytes:
    body = urlencode(form).encode()
    head = (
        f"POST {gateway.token_path} HTTP/1.1\r\nHost: {gateway.host}:{gateway.port}\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n"
    )
    if authorization is not None:
        head += f"Authorization: {authorization}\r\n"
    return (head + "\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """Status, body and whether the server closes the connection (answers carry Content-Length)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length: int | None = None
    close = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            close = True
    if length is None:
        raise ValueError("answer without Content-Length")
    return status, await reader.readexactly(length), close


async def _connect(gateway: Served, context: ssl.SSLContext) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(gateway.host, gateway.port, ssl=context, server_hostname=gateway.host)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), 2)


async def drive(
    gateway: Served, grants: Grants, connections: int, warmup: float, seconds: float | None, rep: int
) -> GrantRun:
    """`connections` keep-alive connections, each sending the next grant request as soon as the last is
    answered. Time-bounded (`warmup` then `seconds`) or, with `seconds=None`, until `grants` runs dry."""
    context = gateway.context()
    opened = [await _connect(gateway, context) for _ in range(connections)]  # handshakes outside the window
    tally = _Tally()
    measure_from = time.monotonic() + warmup
    stop_at = measure_from + seconds if seconds is not None else math.inf

    async def work(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while time.monotonic() < stop_at:
                item = grants.take()
                if item is None:
                    return
                form, authorization = item
                sent = time.perf_counter_ns()
                try:
                    writer.write(_request_bytes(gateway, form, authorization))
                    status, body, close = await asyncio.wait_for(_read_response(reader), RESPONSE_TIMEOUT)
                    elapsed = time.perf_counter_ns() - sent
                    payload: Any = orjson.loads(body) if body[:1] == b"{" else {}
                except (OSError, ssl.SSLError, ValueError, asyncio.IncompleteReadError, TimeoutError) as exc:
                    if time.monotonic() >= measure_from:
                        tally.errors[f"connection: {type(exc).__name__}"] += 1
                    await _close(writer)
                    reader, writer = await _connect(gateway, context)
                    continue
                ok = status == 200 and isinstance(payload, dict) and isinstance(payload.get("access_token"), str)
                if ok:
                    grants.granted(payload)
                done = time.monotonic()
                if measure_from <= done < stop_at:
                    tally.latencies_ns.append(elapsed)
                    if ok:
                        tally.grants += 1
                    else:
                        error = payload.get("error") if isinstance(payload, dict) else None
                        tally.errors[f"{status} {error}"] += 1
                if close:
                    await _close(writer)
                    reader, writer = await _connect(gateway, context)
        finally:
            await _close(writer)

    tasks = [asyncio.create_task(work(reader, writer)) for reader, writer in opened]
    await asyncio.sleep(max(0.0, measure_from - time.monotonic()))
    before = _Sample.take(gateway.pid)
    if seconds is None:
        await asyncio.gather(*tasks)
        after = _Sample.take(gateway.pid)
    else:
        await asyncio.sleep(max(0.0, stop_at - time.monotonic()))
        after = _Sample.take(gateway.pid)
        await asyncio.gather(*tasks)
    window = max(after.at - before.at, 1e-9)
    per_grant = 1000 / max(tally.grants, 1)
    gateway_cpu = after.gateway - before.gateway
    client_cpu = after.client - before.client
    other = (after.machine - before.machine) - gateway_cpu - client_cpu
    latencies = sorted(tally.latencies_ns)
    return GrantRun(
        grant=grants.name,
        concurrency=connections,
        rep=rep,
        grants=tally.grants,
        seconds=window,
        grants_per_s=tally.grants / window,
        errors=dict(tally.errors),
        p50_ms=_percentile_ms(latencies, 50),
        p99_ms=_percentile_ms(latencies, 99),
        gateway_cpu_ms=gateway_cpu * per_grant,
        client_cpu_ms=client_cpu * per_grant,
        other_cores=max(other, 0.0) / window,
    )


def _report_run(run: GrantRun, reps: int) -> None:
    errs = f", errors {run.errors}" if run.errors else ""
    _progress(
        f"  rep {run.rep + 1}/{reps} {run.grant:<18} c={run.concurrency:<2} {run.grants_per_s:7.0f} grants/s "
        f"p50 {run.p50_ms:6.2f} ms p99 {run.p99_ms:6.2f} ms  gw {run.gateway_cpu_ms:.2f} ms/grant  "
        f"other {run.other_cores:.2f} cores{errs}"
    )


async def grant_runs(gateway: Served, prepared: Prepared, plan: Plan) -> tuple[list[GrantRun], int]:
    """Every run, in order: the code exchanges first (codes expire), then refresh and client_credentials
    alternating which goes first per repetition. Returns the runs and the size of the family pool."""
    families: deque[str] = deque()
    codes = prepared.codes
    runs: list[GrantRun] = []
    age = time.monotonic() - prepared.prepared_at
    if age > CODE_LIFETIME_MARGIN:
        raise RuntimeError(f"codes prepared {age:.0f} s ago would expire during the run")
    for concurrency in CONCURRENCY:
        batch, codes = codes[: plan.codes[concurrency]], codes[plan.codes[concurrency] :]
        run = await drive(gateway, CodeGrants(prepared, batch, families), concurrency, 0.0, None, 0)
        runs.append(run)
        _report_run(run, 1)
    pool = len(families)
    if pool < max(CONCURRENCY):
        raise RuntimeError(f"only {pool} refresh token families came out of the code exchanges")
    timed: list[Callable[[], Grants]] = [
        lambda: RefreshGrants(prepared.public_client, families),
        lambda: ClientCredentialsGrants(prepared),
    ]
    for rep in range(plan.reps):
        for make in timed if rep % 2 == 0 else timed[::-1]:
            for concurrency in CONCURRENCY:
                run = await drive(gateway, make(), concurrency, plan.warmup, plan.seconds, rep)
                runs.append(run)
                _report_run(run, plan.reps)
    return runs, pool


@dataclass
class GrantSummary:
    grant: str
    concurrency: int
    grants_per_s: float
    p50_ms: float
    p99_ms: float
    gateway_cpu_ms: float
    client_cpu_ms: float
    other_cores: float
    errors: int
    grants: int
    reps: int


def summarize(runs: Sequence[GrantRun]) -> list[GrantSummary]:
    rows: list[GrantSummary] = []
    for grant in GRANTS:
        for concurrency in CONCURRENCY:
            mine = [r for r in runs if r.grant == grant and r.concurrency == concurrency]
            if not mine:
                continue
            rows.append(
                GrantSummary(
                    grant=grant,
                    concurrency=concurrency,
                    grants_per_s=_median([r.grants_per_s for r in mine]),
                    p50_ms=_median([r.p50_ms for r in mine]),
                    p99_ms=_median([r.p99_ms for r in mine]),
                    gateway_cpu_ms=_median([r.gateway_cpu_ms for r in mine]),
                    client_cpu_ms=_median([r.client_cpu_ms for r in mine]),
                    other_cores=statistics.fmean(r.other_cores for r in mine),
                    errors=sum(sum(r.errors.values()) for r in mine),
                    grants=sum(r.grants for r in mine),
                    reps=len(mine),
                )
            )
    return rows


# -- verification cost, in process ------------------------------------------------------------------------------


@dataclass
class VerifyRow:
    key: str
    case: str
    us_per_call: float
    """Wall time per call, median of the batches (with `parallel` callers: elapsed / calls)."""
    cpu_us_per_call: float
    """This process's CPU per call (every thread: aiosqlite's worker threads included)."""
    calls: int
    parallel: int = 1


async def _calls_until(call: Callable[[], Awaitable[object]], deadline: float) -> int:
    calls = 0
    while time.perf_counter() < deadline:
        for _ in range(10):
            await call()
        calls += 10
    return calls


@dataclass(frozen=True)
class Case:
    key: str
    case: str
    call: Callable[[], Awaitable[object]]
    parallel: int = 1


async def measure_cases(cases: Sequence[Case], plan: Plan) -> tuple[list[VerifyRow], float]:
    """Batches taken round-robin over the cases (so drift hits them all alike); medians per case. Also
    returns the cores the rest of the machine used meanwhile."""
    for case in cases:
        for _ in range(50):
            await case.call()
    walls: dict[str, list[float]] = {case.key: [] for case in cases}
    cpus: dict[str, list[float]] = {case.key: [] for case in cases}
    totals: Counter[str] = Counter()
    machine, own, at = machine_busy_seconds(), time.process_time(), time.monotonic()
    for _ in range(plan.verify_batches):
        for case in cases:
            started, cpu_started = time.perf_counter(), time.process_time()
            deadline = started + plan.verify_seconds
            done = await asyncio.gather(*(_calls_until(case.call, deadline) for _ in range(case.parallel)))
            wall, cpu, calls = time.perf_counter() - started, time.process_time() - cpu_started, sum(done)
            walls[case.key].append(wall / calls * 1e6)
            cpus[case.key].append(cpu / calls * 1e6)
            totals[case.key] += calls
    other = (machine_busy_seconds() - machine) - (time.process_time() - own)
    rows = [
        VerifyRow(
            case.key, case.case, _median(walls[case.key]), _median(cpus[case.key]), totals[case.key], case.parallel
        )
        for case in cases
    ]
    return rows, max(other, 0.0) / max(time.monotonic() - at, 1e-9)


async def _code_grant_token(server: AuthorizationServer, prepared: Prepared) -> str:
    code = await issue_code(server, prepared.public_client, _challenge(prepared.code_verifier), prepared.resource)
    response = await server.token(prepared.code_form(code), None)
    token = response["access_token"]
    assert isinstance(token, str)
    return token


def _revocation_select(db_path: Path, claims: AccessClaims) -> Callable[[], Awaitable[object]]:
    """`SQLOAuthStore.is_token_revoked`'s SELECT, compiled for SQLite, on a stdlib sqlite3 connection."""
    family = claims.raw.get("sid")
    statement = select(
        exists().where(RevokedJTIRow.jti == claims.jwt_id),
        exists().where(FamilyRow.id == family, FamilyRow.revoked_at.is_(None), FamilyRow.expires_at > time.time()),
    )
    compiled = statement.compile(dialect=sqlite_dialect.dialect())
    sql = str(compiled)
    names = compiled.positiontup or []
    params = [compiled.params[name] for name in names]
    connection = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, check_same_thread=False)

    async def call() -> object:
        return connection.execute(sql, params).fetchone()

    return call


async def verify_costs(settings: Settings, prepared: Prepared, plan: Plan) -> tuple[list[VerifyRow], float]:
    async with composed(settings) as (gateway, authorization):
        server = authorization.server
        resource = prepared.resource
        grant_token = await _code_grant_token(server, prepared)
        machine = await server.token(prepared.machine_form(), basic(prepared.machine_client, prepared.machine_secret))
        machine_token = machine["access_token"]
        assert isinstance(machine_token, str)
        issuer = gateway.local_issuer
        if issuer is None:
            raise RuntimeError("auth.local_issuer is off: the authorization server has nothing to sign with")
        # The variants are built as `app.build_gateway` builds the gateway's own verifier (used as is for the
        # "cached, revocation on" case); the cache size, when on, is its default.
        trusted = [TrustedIssuer(issuer.issuer, issuer.public_keys())]
        leeway = settings.auth.token_leeway_seconds
        in_gateway = gateway_verifier(gateway)

        def verify_with(verifier: TokenVerifier) -> Callable[[], Awaitable[object]]:
            return lambda: verifier.verify(grant_token, audience=resource)

        def variant(cache: bool, revocation: bool) -> Callable[[], Awaitable[object]]:
            cache_size = DEFAULT_CACHE_SIZE if cache else 0
            return verify_with(
                AccessTokenVerifier(
                    trusted, leeway_seconds=leeway, revocation=server if revocation else None, cache_size=cache_size
                )
            )

        grant_claims = await in_gateway.verify(grant_token, audience=resource)
        machine_claims = await in_gateway.verify(machine_token, audience=resource)
        db = authorization.db

        async def round_trip() -> object:
            async with db.read() as connection:
                return (await connection.execute(text("SELECT 1"))).scalar()

        cases = [
            Case("cold", "verify: cache off, revocation check on", variant(cache=False, revocation=True)),
            Case("cached", "verify: cache on, revocation check on (the gateway's)", verify_with(in_gateway)),
            Case("cached_c16", "  the same, 16 concurrent callers", verify_with(in_gateway), 16),
            Case(
                "cold_no_revocation", "verify: cache off, no revocation check", variant(cache=False, revocation=False)
            ),
            Case(
                "cached_no_revocation", "verify: cache on, no revocation check", variant(cache=True, revocation=False)
            ),
            Case("revocation", "revocation check: grant token (jti + family)", lambda: server.is_revoked(grant_claims)),
            Case(
                "revocation_jti_only",
                "revocation check: client_credentials token (jti)",
                lambda: server.is_revoked(machine_claims),
            ),
            Case("db_round_trip", "  floor: Database.read() + SELECT 1", round_trip),
        ]
        if db.path is not None:
            select_call = _revocation_select(db.path, grant_claims)
            cases.append(Case("sqlite3", "  floor: same SELECT, stdlib sqlite3 (sync)", select_call))
        return await measure_cases(cases, plan)


# -- report -------------------------------------------------------------------------------------------------------


@dataclass
class Report:
    plan: Plan
    quick: bool
    runs: list[GrantRun]
    rows: list[GrantSummary]
    verify: list[VerifyRow]
    verify_other_cores: float
    """Cores the rest of the machine used while the in-process verification ran."""
    families: int
    prepare_seconds: float
    notes: list[str]
    seconds: float = 0.0

    def _verify(self, key: str) -> float:
        return next((row.us_per_call for row in self.verify if row.key == key), math.nan)

    def _verify_cpu(self, key: str) -> float:
        return next((row.cpu_us_per_call for row in self.verify if row.key == key), math.nan)

    def figures(self) -> dict[str, float]:
        found: dict[str, float] = {}
        for row in self.rows:
            suffix = f"{row.grant}_c{row.concurrency}"
            found[f"grants_per_s_{suffix}"] = row.grants_per_s
            found[f"p50_ms_{suffix}"] = row.p50_ms
            found[f"p99_ms_{suffix}"] = row.p99_ms
            found[f"gateway_cpu_ms_per_grant_{suffix}"] = row.gateway_cpu_ms
        for check in self.verify:
            found[f"verify_us_{check.key}"] = check.us_per_call
            found[f"verify_cpu_us_{check.key}"] = check.cpu_us_per_call
        cached, bare = self._verify("cached"), self._verify("cached_no_revocation")
        if cached == cached and bare == bare and cached > 0:
            # What the revocation check adds to a cached verify, as a share of it.
            found["revocation_share_of_cached_verify"] = (cached - bare) / cached
        return {k: v for k, v in found.items() if v == v}

    def table(self) -> str:
        header = (
            f"{'grant':<20} {'conc':>4} {'grants/s':>9} {'p50 ms':>7} {'p99 ms':>7} "
            f"{'gw CPU':>8} {'client':>8} {'other':>6} {'errors':>6}"
        )
        units = f"{'':<20} {'':>4} {'':>9} {'':>7} {'':>7} {'ms/grant':>8} {'ms/grant':>8} {'cores':>6}"
        lines = [header, units, "-" * len(header)]
        for row in self.rows:
            lines.append(
                f"{row.grant:<20} {row.concurrency:>4} {row.grants_per_s:9.0f} {row.p50_ms:7.2f} {row.p99_ms:7.2f} "
                f"{row.gateway_cpu_ms:8.2f} {row.client_cpu_ms:8.2f} {row.other_cores:6.2f} {row.errors:6d}"
            )
        lines.append("")
        header = f"{'token verification, in process':<56} {'µs/call':>9} {'CPU µs':>9} {'calls':>8}"
        lines += [header, "-" * len(header)]
        for check in self.verify:
            lines.append(f"{check.case:<56} {check.us_per_call:9.1f} {check.cpu_us_per_call:9.1f} {check.calls:8d}")
        return "\n".join(lines)

    def headline(self) -> str:
        by = {(row.grant, row.concurrency): row for row in self.rows}
        lines = ["authorization:"]
        for grant in GRANTS:
            parts = [f"{by[(grant, c)].grants_per_s:.0f} grants/s @{c}" for c in CONCURRENCY if (grant, c) in by]
            cpu = [by[(grant, c)].gateway_cpu_ms for c in CONCURRENCY if (grant, c) in by]
            if parts:
                lines.append(
                    f"  token endpoint, {grant}: {', '.join(parts)}; gateway CPU {_median(cpu):.2f} ms per grant"
                )
        tails = [
            f"{grant} {by[(grant, c)].p99_ms / by[(grant, c)].p50_ms:.0f}x"
            for grant in GRANTS
            for c in CONCURRENCY[1:]
            if (grant, c) in by and by[(grant, c)].p50_ms > 0
        ]
        if tails:
            lines.append(
                f"  tail @{CONCURRENCY[-1]}: p99/p50 {', '.join(tails)} (code and refresh grants write: they queue "
                "for SQLite's write lock, client_credentials only reads)"
            )
        cached, cold = self._verify("cached"), self._verify("cold")
        bare_cached, bare_cold = self._verify("cached_no_revocation"), self._verify("cold_no_revocation")
        revocation = self._verify("revocation")
        lines.append(
            f"  verify per call: cached {cached:.1f} µs, cold {cold:.1f} µs (with the revocation check); "
            f"without it: cached {bare_cached:.1f} µs, cold {bare_cold:.1f} µs"
        )
        share = self.figures().get("revocation_share_of_cached_verify", math.nan)
        lines.append(
            f"  revocation check: {revocation:.1f} µs per call alone (CPU {self._verify_cpu('revocation'):.1f} µs); "
            f"it is {share:.1%} of a cached verify: a SQLite read on every call, cached or not"
        )
        floor, raw = self._verify("db_round_trip"), self._verify("sqlite3")
        if floor == floor:
            lines.append(
                f"    of which: one Database.read() round trip costs {floor:.1f} µs alone"
                + (f"; the SELECT itself {raw:.1f} µs through stdlib sqlite3" if raw == raw else "")
            )
        if share == share and share > 0.5:
            lines.append("  note: the revocation check dominates the per-call cost of verifying a token")
        return "\n".join(lines)

    def document(self) -> dict[str, Any]:
        return {
            "figures": self.figures(),
            "grants": [asdict(row) for row in self.rows],
            "runs": [asdict(run) for run in self.runs],
            "verify": [asdict(row) for row in self.verify],
            "notes": self.notes,
            "settings": {**asdict(self.plan), "codes": {str(k): v for k, v in self.plan.codes.items()}}
            | {"quick": self.quick, "concurrency": list(CONCURRENCY), "family_pool": self.families},
            "setup_seconds": self.prepare_seconds,
            "verify_other_cores": self.verify_other_cores,
            "seconds": self.seconds,
        }

    def render(self) -> str:
        title = (
            f"mcp-bastion authorization benchmark: {os.cpu_count()} cores, Python {platform.python_version()}; "
            f"token endpoint over HTTPS (SQLite), medians of {self.plan.reps} rep(s) x {self.plan.seconds:g} s, "
            f"authorization_code: {'/'.join(str(self.plan.codes[c]) for c in CONCURRENCY)} codes once; "
            f"refresh over {self.families} families"
        )
        parts = [title, self.table(), "", self.headline()]
        contention = statistics.fmean(r.other_cores for r in self.runs) if self.runs else 0.0
        if contention > 0.15:
            parts.append(f"note: other processes used {contention:.2f} cores on average during the grant runs")
        if self.verify_other_cores > 0.15:
            parts.append(
                f"note: other processes used {self.verify_other_cores:.2f} cores during the in-process verification"
            )
        parts += self.notes
        return "\n".join(parts)


def run(python: str, workdir: Path, *, quick: bool) -> Report:
    """The whole authorization benchmark in `workdir` (its own gateway, ended before the in-process part).
    Raises `RuntimeError` when it cannot run (the gateway's own refusals included)."""
    try:
        return _run(python, workdir, quick=quick)
    except (BastionError, OAuthError) as exc:
        raise RuntimeError(f"authorization benchmark: {type(exc).__name__}: {exc}") from exc


def _run(python: str, workdir: Path, *, quick: bool) -> Report:
    started = time.monotonic()
    plan = Plan.for_mode(quick)
    workdir.mkdir(parents=True, exist_ok=True)
    config = write_config(workdir, python, _free_port())
    settings = load_settings(config)
    children = Children()
    try:
        codes = WARM_CODES + sum(plan.codes.values())
        _progress(f"bench: authorization: registering clients and preparing {codes} codes in {workdir}")
        prepared = _run_async(prepare(settings, config, python, codes))
        _progress(f"bench: authorization: prepared in {prepared.seconds:.1f} s; starting the gateway")
        gateway = start_gateway(python, config, settings, workdir, children)
        warm, prepared.codes = prepared.codes[:WARM_CODES], prepared.codes[WARM_CODES:]
        sanity_check(gateway, prepared, warm[0])
        _run_async(_warm_up(gateway, prepared, warm[1:]))
        runs, families = _run_async(grant_runs(gateway, prepared, plan))
        notes = gateway_findings(gateway)
    finally:
        children.close()
    _progress("bench: authorization: token verification in process")
    verify, verify_other = _run_async(verify_costs(settings, prepared, plan))
    report = Report(plan, quick, runs, summarize(runs), verify, verify_other, families, prepared.seconds, notes)
    report.seconds = time.monotonic() - started
    return report


async def _warm_up(gateway: Served, prepared: Prepared, codes: Sequence[str]) -> None:
    """First calls of each grant (imports, first-use paths) outside every measurement."""
    families: deque[str] = deque()
    await drive(gateway, CodeGrants(prepared, codes, families), 1, 0.0, None, 0)
    await drive(gateway, RefreshGrants(prepared.public_client, families), 1, 0.0, 0.2, 0)
    await drive(gateway, ClientCredentialsGrants(prepared), 1, 0.0, 0.2, 0)
