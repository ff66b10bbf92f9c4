"""Child processes behind stdio upstreams: spawn, supervise, restart with backoff, stop within a bound.

``ChildProcess`` is one running child; ``Supervisor`` keeps one child running for a ``LineHandler``
(the routing layer in ``upstream.link``) and restarts it when it dies.

Invariants:
- a child's environment is exactly the configured variables plus ``PATH``: the gateway's own environment
  (which may hold secrets) is never inherited;
- every child leads its own session and process group, so a signal reaches its grandchildren too;
- stdout is the protocol (MCP "stdio" transport: one JSON-RPC message per line, at most ``limit`` bytes);
  stderr belongs to the operator: logged line by line, truncated and rate-limited, never relayed to a client;
- writes are serialised by one lock, so lines of concurrent requests never interleave;
- stopping is bounded (``STOP_GRACE``): close stdin, SIGTERM the group after a grace, then SIGKILL it;
- restarts follow the backoff steps; a child that crashes again after the last step, without having run
  ``STABLE_SECONDS`` since its start, breaks the supervisor for good (a crash loop is not hidden).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

from mcp_bastion.errors import ConfigError, UpstreamError, UpstreamTimeout

if TYPE_CHECKING:
    from mcp_bastion.sandbox.launch import Launch, Sandbox

# The operator reads one logger for everything a stdio upstream does, whichever module logs it.
logger = logging.getLogger("mcp_bastion.upstream.stdio")

STOP_GRACE: Final = (1.0, 0.5, 0.3)
"""Seconds waited for the child to exit after closing its stdin, after SIGTERM, and after SIGKILL."""

STDERR_DRAIN: Final = 0.2
"""Seconds left to log the last stderr lines once the child is gone: a stop takes at most 2 s in all."""

STABLE_SECONDS: Final = 30.0
"""A child that ran this long before crashing starts the backoff steps afresh."""

LOG_LINE_CHARS: Final = 500
"""Longest stderr (or junk stdout) line copied into the log; the rest is cut."""


class LogBudget:
    """A token bucket for log lines from a child: a burst, then ``rate`` lines per second; the rest are counted."""

    def __init__(self, rate: float = 10.0, burst: float = 50.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._clock = clock
        self._last = clock()
        self.suppressed = 0

    def allow(self) -> bool:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        self.suppressed += 1
        return False

    def take_suppressed(self) -> int:
        count, self.suppressed = self.suppressed, 0
        return count


def child_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The configured variables plus the gateway's ``PATH`` (unless configured): nothing else is inherited."""
    return {"PATH": os.environ.get("PATH", os.defpath), **env}


class ChildProcess:
    """One spawned child: its pipes, its stderr pump, serialised writes, a bounded stop."""

    def __init__(
        self, name: str, process: asyncio.subprocess.Process, *, write_timeout: float, launch: Launch | None = None
    ) -> None:
        self.name = name
        self._launch = launch
        """The sandbox this child runs in (its pids cgroup is removed once the child is gone)."""
        self.pid = process.pid
        self.alive = True
        """False once its stdout ended or its stop began: writes are refused from then on."""
        self.junk_budget = LogBudget()
        """Shared by whoever logs this child's invalid stdout lines."""
        self._process = process
        self._write_timeout = write_timeout
        self._write_lock = asyncio.Lock()
        self._stop_lock = asyncio.Lock()
        self._stderr = asyncio.create_task(self._pump_stderr(), name=f"{name}[{self.pid}] stderr")

    @classmethod
    async def spawn(
        cls,
        name: str,
        command: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path | None,
        limit: int,
        write_timeout: float,
        sandbox: Sandbox | None = None,
    ) -> ChildProcess:
        argv, environment, launch = list(command), child_environment(env), None
        if sandbox is not None:
            # bwrap runs in the gateway's directory; the server's own cwd is set inside (--chdir).
            try:
                launch = sandbox.prepare(command, environment, cwd)
            except (ConfigError, OSError) as exc:
                detail = exc.detail if isinstance(exc, ConfigError) else str(exc)
                raise UpstreamError(
                    f"{name}: cannot sandbox {command[0]!r}: {detail}", reason="upstream_crashed"
                ) from exc
            argv, environment, cwd = launch.argv, launch.env, None
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=environment,
                cwd=cwd,
                limit=limit,
                # Own session and process group: SIGTERM/SIGKILL on stop reach the grandchildren too, and a
                # Ctrl-C meant for the gateway's terminal does not kill the children behind its back.
                start_new_session=True,
                pass_fds=launch.pass_fds if launch is not None else (),
            )
        except OSError as exc:
            if launch is not None:
                launch.cleanup()
            raise UpstreamError(f"{name}: cannot start {command[0]!r}: {exc}", reason="upstream_crashed") from exc
        finally:
            if launch is not None:
                launch.close_fds()
        return cls(name, process, write_timeout=write_timeout, launch=launch)

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    async def readline(self) -> bytes | None:
        """The next stdout line without its line ending; None at end of file."""
        stdout = self._process.stdout
        assert stdout is not None  # spawned with stdout=PIPE
        try:
            line = await stdout.readuntil(b"\n")
        except asyncio.IncompleteReadError:
            # A last line without a newline is the child dying mid-write: there is no message to recover.
            return None
        except asyncio.LimitOverrunError as exc:
            raise UpstreamError(
                f"{self.name}: child {self.pid} wrote a line over {exc.consumed} bytes",
                reason="upstream_reply_too_large",
            ) from exc
        return line.rstrip(b"\r\n")

    async def write(self, line: bytes) -> None:
        """Write one message line: ``UpstreamError`` if the child is gone, ``UpstreamTimeout`` if it stops reading."""
        stdin = self._process.stdin
        assert stdin is not None  # spawned with stdin=PIPE
        try:
            async with asyncio.timeout(self._write_timeout), self._write_lock:
                if not self.alive or stdin.is_closing():
                    raise UpstreamError(f"{self.name}: child {self.pid} is not running", reason="upstream_crashed")
                # The line goes into the transport buffer whole before any await: a timeout or cancellation
                # during drain() can delay it but never tear it.
                stdin.write(line + b"\n")
                await stdin.drain()
        except TimeoutError as exc:
            raise UpstreamTimeout(f"{self.name}: child {self.pid} does not read its stdin") from exc
        except ConnectionError as exc:
            raise UpstreamError(f"{self.name}: child {self.pid} closed its stdin", reason="upstream_crashed") from exc

    async def stop(self) -> int | None:
        """Stop the child and its process group within 2 s; return its exit status."""
        self.alive = False
        async with self._stop_lock:
            process = self._process
            if process.stdin is not None and not process.stdin.is_closing():
                # EOF on stdin is the stdio transport's polite "shut down" (MCP spec, stdio shutdown).
                process.stdin.close()
            for sig, grace in zip((None, signal.SIGTERM, signal.SIGKILL), STOP_GRACE, strict=True):
                if sig is not None:
                    self._signal_group(sig)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(grace):
                        await process.wait()
                        break
            # Stragglers the group's leader left behind.
            self._signal_group(signal.SIGKILL)
            # The last stderr lines (often the traceback of a crash) are still worth logging.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STDERR_DRAIN):
                    await asyncio.shield(self._stderr)
            # wait() returns at exit even while a pipe is open: a grandchild outside the group may hold one,
            # or our stdout reader stopped reading (a line over the limit). Close them; no public API does.
            transport: asyncio.SubprocessTransport = process._transport  # type: ignore[attr-defined]
            transport.close()
            self._stderr.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stderr
            if self._launch is not None:
                self._launch.cleanup()
            return process.returncode

    def kill(self) -> None:
        """SIGKILL the group now (a child that failed its restart replay); the supervisor notices the EOF."""
        self.alive = False
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, sig: signal.Signals) -> None:
        # The group id is the child's pid (start_new_session); the kernel keeps that id from being reused
        # while any member of the group is alive.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    async def _pump_stderr(self) -> None:
        stderr = self._process.stderr
        assert stderr is not None  # spawned with stderr=PIPE
        budget = LogBudget()
        while True:
            try:
                line = await stderr.readline()
            except ValueError:
                line = b"(a stderr line over the size limit was dropped)"
            if not line:
                break
            if budget.allow():
                if skipped := budget.take_suppressed():
                    logger.warning("%s[%d]: %d stderr lines not logged (rate limit)", self.name, self.pid, skipped)
                text = line.decode("utf-8", "replace").rstrip()
                logger.info("%s[%d] stderr: %s", self.name, self.pid, text[:LOG_LINE_CHARS])
        if skipped := budget.take_suppressed():
            logger.warning("%s[%d]: %d stderr lines not logged (rate limit)", self.name, self.pid, skipped)


class LineHandler(Protocol):
    """What the supervisor drives: the routing layer of one supervised child."""

    def on_line(self, child: ChildProcess, line: bytes) -> None:
        """One line from the child's stdout (must not block: it runs in the reading loop)."""

    async def on_start(self, child: ChildProcess, restarted: bool) -> None:
        """Prepare a fresh child (e.g. replay the session); raising kills it, which counts as a crash."""

    def on_exit(self, error: UpstreamError, final: bool) -> None:
        """The child is gone (``final``: for good); fail whatever was waiting for it with ``error``."""


class Supervisor:
    """Keeps one child running for a handler: restarts it with backoff, gives up after the last step."""

    def __init__(
        self,
        name: str,
        spawn: Callable[[], Awaitable[ChildProcess]],
        handler: LineHandler,
        backoff: Sequence[float],
        ready_timeout: float,
    ) -> None:
        self.name = name
        self._ready_timeout = ready_timeout
        self.broken: UpstreamError | None = None
        """Why the supervisor gave up (or was closed); every later request fails with it."""
        self._spawn = spawn
        self._handler = handler
        self._backoff = tuple(backoff)
        self._child: ChildProcess | None = None
        # Set when the child is ready for requests *or* the supervisor is broken; cleared while restarting.
        self._ready = asyncio.Event()
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"stdio upstream {self.name}")

    async def current(self) -> ChildProcess:
        """The running, ready child; waits while it (re)starts; raises once the supervisor is broken."""
        try:
            async with asyncio.timeout(self._ready_timeout):
                while True:
                    if self.broken is not None:
                        raise UpstreamError(self.broken.detail, reason=self.broken.reason)
                    if self._child is not None and self._ready.is_set():
                        return self._child
                    await self._ready.wait()
        except TimeoutError as exc:
            raise UpstreamTimeout(f"{self.name}: the child did not become ready in {self._ready_timeout} s") from exc

    async def aclose(self) -> None:
        if not self._closing:
            self._closing = True
            self._wake.set()
            if self._child is not None:
                await self._child.stop()
        if self._task is not None:
            await self._task
        elif self.broken is None:
            self._give_up(UpstreamError(f"{self.name}: closed", reason="upstream_closed"))

    async def _run(self) -> None:
        step = 0
        restarted = False
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            error = await self._serve_one(restarted)
            if self._closing:
                self._give_up(UpstreamError(f"{self.name}: closed", reason="upstream_closed"))
                return
            if loop.time() - started >= STABLE_SECONDS:
                step = 0
            if step >= len(self._backoff):
                logger.error("%s: giving up after %d restarts: %s", self.name, step, error.detail)
                detail = f"{self.name}: gave up restarting: {error.detail}"
                self._give_up(UpstreamError(detail, reason="upstream_crashed"))
                return
            delay = self._backoff[step]
            step += 1
            restarted = True
            logger.warning("%s: %s; restarting in %.1f s", self.name, error.detail, delay)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    async def _serve_one(self, restarted: bool) -> UpstreamError:
        try:
            child = await self._spawn()
        except UpstreamError as exc:
            return exc
        if self._closing:
            await child.stop()
            return UpstreamError(f"{self.name}: closed", reason="upstream_closed")
        self._child = child
        starter = asyncio.create_task(self._start(child, restarted))
        error = await self._pump(child)
        # No await before these three: a request must not be handed a child whose stdout has ended.
        self._ready.clear()
        self._child = None
        child.alive = False
        if self._closing:
            error = UpstreamError(f"{self.name}: closed", reason="upstream_closed")
        starter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await starter
        # Fail the waiting requests first: they should not wait for the bounded stop below.
        self._handler.on_exit(error, final=False)
        status = await child.stop()
        logger.info("%s: child %d stopped with status %s", self.name, child.pid, status)
        return error

    async def _start(self, child: ChildProcess, restarted: bool) -> None:
        try:
            await self._handler.on_start(child, restarted)
        except UpstreamError as exc:
            logger.warning("%s: child %d failed its start: %s", self.name, child.pid, exc.detail)
            child.kill()
            return
        self._ready.set()

    async def _pump(self, child: ChildProcess) -> UpstreamError:
        while True:
            try:
                line = await child.readline()
            except UpstreamError as exc:
                return exc
            if line is None:
                return UpstreamError(f"{self.name}: child {child.pid} closed its stdout", reason="upstream_crashed")
            self._handler.on_line(child, line)

    def _give_up(self, error: UpstreamError) -> None:
        self.broken = error
        self._ready.set()
        self._handler.on_exit(error, final=True)
