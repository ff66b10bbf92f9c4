"""The policy in force: loaded from files at startup, reloaded on SIGHUP or when a file changes.

A reload compiles the whole new set first and swaps one reference only when it is valid: every decision
reads ``store.engine`` once and uses that engine to the end, so no request is ever decided by a
half-loaded set. A new set that does not parse or validate is refused: the old one stays in force, and
the refusal is logged and audited (``decision: error``, ``reason: policy_reload_refused``).

Invariants:
- startup refuses to run with an invalid policy (``ConfigError`` naming the file and the problem);
- an empty set is allowed (it denies everything) and logged as a warning at every load;
- a file that cannot be read during a reload is a refused reload, never an empty set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, final

from mcp_bastion.audit.sink import AuditSink
from mcp_bastion.errors import ConfigError
from mcp_bastion.jsonrpc.message import JSONObject
from mcp_bastion.policy.engine import PolicyEngine, PolicyError, PolicySource, compile_policies

logger = logging.getLogger(__name__)

POLL_SECONDS: Final = 2.0
"""How often watched files are checked for changes (their size and mtime)."""
MAX_POLICY_BYTES: Final = 4 * 1024 * 1024


def read_sources(files: Sequence[Path]) -> list[PolicySource]:
    """The texts of ``files``; ``PolicyError`` when one cannot be read."""
    sources = []
    for path in files:
        try:
            with path.open("rb") as handle:
                data = handle.read(MAX_POLICY_BYTES + 1)
        except OSError as exc:
            raise PolicyError(f"{path}: cannot be read ({exc.strerror})") from exc
        if len(data) > MAX_POLICY_BYTES:
            raise PolicyError(f"{path}: larger than {MAX_POLICY_BYTES} bytes")
        try:
            sources.append(PolicySource(path.name, data.decode("utf-8")))
        except UnicodeDecodeError as exc:
            raise PolicyError(f"{path}: not UTF-8") from exc
    return sources


def load_engine(files: Sequence[Path], arguments: Mapping[str, str]) -> PolicyEngine:
    return compile_policies(read_sources(files), arguments)


@final
class PolicyStore:
    """Holds the engine in force and replaces it atomically."""

    def __init__(
        self,
        files: Sequence[Path],
        arguments: Mapping[str, str],
        *,
        audit: AuditSink | None = None,
        watch: bool = True,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self._files = tuple(files)
        self._arguments = dict(arguments)
        self._audit = audit
        self._watch = watch
        self._poll = poll_seconds
        try:
            self.engine: PolicyEngine = load_engine(self._files, self._arguments)
        except PolicyError as exc:
            raise ConfigError(f"policy: {exc.detail}") from exc
        self._stamps = self._file_stamps()
        self._task: asyncio.Task[None] | None = None
        self._announce()

    def reload(self) -> bool:
        """Compile the files again and swap them in; False (old set kept, logged, audited) when invalid."""
        stamps = self._file_stamps()
        try:
            engine = load_engine(self._files, self._arguments)
        except PolicyError as exc:
            self._stamps = stamps  # do not retry the same broken files every poll
            logger.error("policy reload refused, the previous policy stays in force: %s", exc.detail)
            self._emit("error", "policy_reload_refused", exc.detail)
            return False
        self._stamps = stamps
        previous = self.engine.version
        self.engine = engine
        self._announce()
        self._emit("allow", "policy_reloaded", f"version {previous} -> {engine.version}")
        return True

    async def start(self) -> None:
        """Reload on SIGHUP (main thread only) and, when watching, on file changes."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, self.reload)
        if self._watch and self._files:
            self._task = asyncio.create_task(self._watch_files())

    async def aclose(self) -> None:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _watch_files(self) -> None:
        while True:
            await asyncio.sleep(self._poll)
            if self._file_stamps() != self._stamps:
                try:
                    self.reload()
                except Exception:  # a bug must not stop the watcher for good: logged, tried at the next change
                    logger.exception("policy reload failed")

    def _file_stamps(self) -> tuple[tuple[int, int] | None, ...]:
        stamps: list[tuple[int, int] | None] = []
        for path in self._files:
            try:
                stat = path.stat()
            except OSError:
                stamps.append(None)
            else:
                stamps.append((stat.st_mtime_ns, stat.st_size))
        return tuple(stamps)

    def _announce(self) -> None:
        engine = self.engine
        if engine.count == 0:
            logger.warning("no policy permits anything: every tool call, read and list is denied (policy.files)")
        else:
            logger.info(
                "policy %s in force: %d policies from %d file(s)", engine.version, engine.count, len(self._files)
            )

    def _emit(self, decision: str, reason: str, detail: str) -> None:
        if self._audit is None:
            return
        record: JSONObject = {
            "time": datetime.fromtimestamp(time.time(), UTC).isoformat(timespec="milliseconds"),
            "request_id": secrets.token_hex(8),
            "method": "(policy reload)",
            "decision": decision,
            "reason": reason,
            "detail": detail[:512],
            "policy_version": self.engine.version,
        }
        self._audit.emit(record)
