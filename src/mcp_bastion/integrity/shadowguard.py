"""The shadowing quarantine: ``integrity.shadowing`` findings turned into held tools, and calls refused.

With pins (the usual case) the decision lives in the ``PinStore``: a flagged tool is quarantined there with
reason ``shadowing`` and its findings (``mcp-bastion pins list`` shows them; ``pins approve`` releases it,
and an approved definition is not flagged again), so it is hidden and refused on every endpoint, the
per-server ones included, and the first-seen times that decide which tool is the imitator are the pins'.
Without pins (no database) the guard keeps the same decision in memory for the life of the process, with
its own first-seen times; a held tool is then released only by a restart after the configuration changed.

Invariants:
- a tool is held as soon as a review finds it, before the list that revealed it is answered;
- holds without pins only grow (a later review by a user whose policy hides the genuine tool cannot
  release the imitator); memory is bounded by ``MAX_REMEMBERED``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Final, final

from mcp_bastion.errors import ToolQuarantined
from mcp_bastion.integrity.pins import PinStore
from mcp_bastion.integrity.shadowing import TIE_SECONDS, ToolRef, find_shadowing
from mcp_bastion.jsonrpc.message import JSONValue

log = logging.getLogger(__name__)

MAX_REMEMBERED: Final = 100_000
"""Tools whose first sight and review the guard remembers (beyond: treated as new, i.e. reviewed again)."""

Key = tuple[str, str]


@final
class ShadowGuard:
    def __init__(
        self, pins: PinStore | None, *, clock: Callable[[], float] = time.time, tie_seconds: float = TIE_SECONDS
    ) -> None:
        self._pins = pins
        self._clock = clock
        self._tie = tie_seconds
        self._first_seen: dict[Key, float] = {}
        self._held: dict[Key, tuple[str, ...]] = {}
        self._reviewed: set[Key] = set()

    def reviewed(self, server: str, name: str) -> bool:
        """Whether a review has seen this tool (a call of one never reviewed should trigger a review first)."""
        return (server, name) in self._reviewed

    async def review(self, tools: Sequence[tuple[str, Mapping[str, JSONValue]]]) -> set[Key]:
        """Look at (server, tool definition) pairs together; hold and return the tools found shadowing."""
        now = self._clock()
        refs: list[ToolRef] = []
        for server, item in tools:
            name = item.get("name")
            if not isinstance(name, str):
                continue
            description = item.get("description")
            text = description if isinstance(description, str) else ""
            refs.append(ToolRef(server, name, text, self._seen(server, name, now)))
            if len(self._reviewed) < MAX_REMEMBERED:
                self._reviewed.add((server, name))
        found: dict[Key, list[str]] = {}
        for finding in find_shadowing(refs, tie_seconds=self._tie):
            found.setdefault((finding.server, finding.name), []).append(str(finding))
        held: set[Key] = set()
        for (server, name), findings in found.items():
            if self._pins is not None:
                # The pin store logs the quarantine, and keeps an administrator's approval standing.
                if await self._pins.flag(server, name, "tool", "shadowing", findings):
                    held.add((server, name))
                continue
            if (server, name) not in self._held:
                log.warning("tool %s of %s quarantined (shadowing): %s", name, server, "; ".join(findings)[:300])
                if len(self._held) >= MAX_REMEMBERED:
                    continue
                self._held[(server, name)] = tuple(findings)
            held.add((server, name))
        return held

    def refuse(self, server: str, name: str) -> None:
        """Raise ``ToolQuarantined`` (reason ``tool_shadowing``) when ``name`` of ``server`` is held."""
        if self._pins is not None:
            held = self._pins.reason(server, name, "tool") == "shadowing"
        else:
            held = (server, name) in self._held
        if held:
            detail = f"{server}: tool {name[:100]!r} imitates or names another server's tool"
            raise ToolQuarantined(detail, reason="tool_shadowing")

    def _seen(self, server: str, name: str, now: float) -> float | None:
        if self._pins is not None:
            pin = self._pins.pinned(server, name)
            return pin.first_seen if pin is not None else None
        seen = self._first_seen.get((server, name))
        if seen is None and len(self._first_seen) < MAX_REMEMBERED:
            self._first_seen[(server, name)] = seen = now
        return seen
