"""Pinned definitions: the rug-pull defence, for tools, prompts, resources and resource templates.

The first time the gateway sees a server's item (in any list answer, the client's or its own), it records
a pin: a digest of everything the model reads or the gateway decides on (for a tool: name, title,
description, input and output schema, annotations; see ``FIELDS``) and a full copy. Later answers are
compared with the pin: an item whose definition changed is *quarantined* — hidden from lists and refused
when used — until an administrator looks at the change (``mcp-bastion pins diff``) and approves it (the
new definition becomes the pin) or rejects it (the change is dropped; the item stays quarantined while the
server keeps sending it, and is back as soon as the server returns to the pinned definition). In
``strict`` mode an item seen for the first time is quarantined too, until approved.

A definition is also *inspected* when first seen or changed (``Inspector``: the description-poisoning scan
of ``scan``): an item with findings is quarantined at once (reason ``flagged``) — a poisoned tool is never
trusted on first use. Other checks that need more than one definition (shadowing across servers) quarantine
through ``flag``.

Invariants:
- the decision for a definition is made from memory (loaded at startup, kept current by this process's
  own writes and re-read every ``REFRESH_SECONDS`` for other processes' approvals); the database is written
  only when something is new or changed, so the list path costs a digest per item;
- a quarantined item is never shown and never usable, whatever the policy says;
- only an administrator's approval releases a ``new``, ``flagged`` or ``shadowing`` quarantine; a
  ``changed`` one is also released when the server returns to the pinned definition;
- the digest covers canonical JSON (sorted keys, no whitespace), so key order cannot hide or fake a change.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, final

import orjson
from sqlalchemy import select, update

from mcp_bastion.jsonrpc.message import JSONValue
from mcp_bastion.storage import records
from mcp_bastion.storage.db import Database
from mcp_bastion.storage.models import ToolPinRow

logger = logging.getLogger(__name__)

Kind = Literal["tool", "prompt", "resource", "template"]
FIELDS: Final[Mapping[Kind, tuple[str, ...]]] = {
    "tool": ("name", "title", "description", "inputSchema", "outputSchema", "annotations"),
    "prompt": ("name", "title", "description", "arguments"),
    # Not ``size``: a file's size changes without its meaning changing.
    "resource": ("uri", "name", "title", "description", "mimeType", "annotations"),
    "template": ("uriTemplate", "name", "title", "description", "mimeType", "annotations"),
}
"""What a pin covers, per kind: everything the model reads and the gateway decides on."""
KEY: Final[Mapping[Kind, str]] = {"tool": "name", "prompt": "name", "resource": "uri", "template": "uriTemplate"}
"""The member naming an item within its server."""
LIST_KINDS: Final[Mapping[str, Kind]] = {
    "tools/list": "tool",
    "prompts/list": "prompt",
    "resources/list": "resource",
    "resources/templates/list": "template",
}
REFRESH_SECONDS: Final = 10.0
MAX_PINS_PER_SERVER: Final = 10_000
"""Beyond this, new items of a server are quarantined unpinned (a server cannot fill the table)."""
PinMode = Literal["trust_on_first_use", "strict"]
State = Literal["approved", "quarantined"]
Reason = Literal["changed", "new", "flagged", "shadowing", "approved"]
Inspector = Callable[[Kind, Mapping[str, JSONValue]], Sequence[str]]
"""Scans one definition; returns short findings (empty: nothing suspicious). Must not raise."""


def definition_of(item: Mapping[str, JSONValue], kind: Kind = "tool") -> dict[str, JSONValue]:
    return {name: item[name] for name in FIELDS[kind] if name in item}


def digest_of(definition: Mapping[str, JSONValue]) -> str:
    return hashlib.sha256(orjson.dumps(dict(definition), option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(frozen=True, slots=True)
class Pin:
    server: str
    name: str
    digest: str
    definition: dict[str, Any]
    state: State
    pending_digest: str | None
    pending: dict[str, Any] | None
    first_seen: float
    changed_at: float | None
    kind: Kind = "tool"
    reason: Reason | None = None
    findings: tuple[str, ...] = ()


def _pin(row: Sequence[Any]) -> Pin:
    _id, server, name, digest, definition, state, pending_digest, pending, first_seen, changed_at = row[:10]
    kind, reason, findings = row[10:]
    return Pin(
        server,
        name,
        digest,
        definition,
        state,
        pending_digest,
        pending,
        first_seen,
        changed_at,
        kind,
        reason,
        tuple(findings or ()),
    )


_COLUMNS: Final = (
    ToolPinRow.id,
    ToolPinRow.server,
    ToolPinRow.name,
    ToolPinRow.digest,
    ToolPinRow.definition,
    ToolPinRow.state,
    ToolPinRow.pending_digest,
    ToolPinRow.pending,
    ToolPinRow.first_seen,
    ToolPinRow.changed_at,
    ToolPinRow.kind,
    ToolPinRow.reason,
    ToolPinRow.findings,
)


def _id(server: str, name: str, kind: Kind = "tool") -> str:
    return f"{kind}\x1f{server}\x1f{name}"


async def list_pins(db: Database, server: str | None = None, kind: Kind | None = None) -> list[Pin]:
    query = select(*_COLUMNS).order_by(ToolPinRow.server, ToolPinRow.kind, ToolPinRow.name)
    if server is not None:
        query = query.where(ToolPinRow.server == server)
    if kind is not None:
        query = query.where(ToolPinRow.kind == kind)
    async with db.read() as connection:
        return [_pin(row) for row in (await connection.execute(query)).all()]


async def approve(db: Database, server: str, name: str, kind: Kind = "tool", now: float | None = None) -> bool:
    """Make the waiting definition the pin (or release a new, flagged or shadowing item)."""
    pins = {pin.name: pin for pin in await list_pins(db, server, kind)}
    pin = pins.get(name)
    if pin is None or pin.state != "quarantined":
        return False
    values: dict[str, object] = {"state": "approved", "pending": None, "pending_digest": None, "reason": "approved"}
    if pin.pending is not None and pin.pending_digest is not None:
        values.update({"definition": pin.pending, "digest": pin.pending_digest})
    values["changed_at"] = time.time() if now is None else now
    async with db.transaction() as connection:
        await connection.execute(update(ToolPinRow).where(ToolPinRow.id == _id(server, name, kind)).values(values))
    return True


async def reject(db: Database, server: str, name: str, kind: Kind = "tool") -> bool:
    """Drop the waiting definition: the pin stays; the item is back only when the server sends the pin again."""
    async with db.transaction() as connection:
        result = await connection.execute(
            update(ToolPinRow)
            .where(ToolPinRow.id == _id(server, name, kind), ToolPinRow.pending_digest.is_not(None))
            .values(pending=None, pending_digest=None)
        )
    return bool(result.rowcount)


@final
class PinStore:
    """The pins in force, in memory, over the ``tool_pins`` table."""

    def __init__(
        self,
        db: Database,
        *,
        mode: PinMode = "trust_on_first_use",
        inspector: Inspector | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._mode = mode
        self._inspector = inspector
        self._clock = clock
        self._monotonic = monotonic
        self._pins: dict[str, Pin] = {}
        self._counts: dict[str, int] = {}
        self._loaded_at: float | None = None

    async def load(self) -> None:
        pins = await list_pins(self._db)
        self._pins = {_id(pin.server, pin.name, pin.kind): pin for pin in pins}
        self._counts = {}
        for pin in pins:
            self._counts[pin.server] = self._counts.get(pin.server, 0) + 1
        self._loaded_at = self._monotonic()

    async def observe(self, server: str, items: Sequence[Mapping[str, JSONValue]], kind: Kind = "tool") -> set[str]:
        """Compare one list answer's items with their pins (pinning new ones); the names to quarantine."""
        if self._loaded_at is None or self._monotonic() - self._loaded_at >= REFRESH_SECONDS:
            await self.load()
        key = KEY[kind]
        quarantined: set[str] = set()
        for item in items:
            name = item.get(key)
            if not isinstance(name, str):
                continue
            definition = definition_of(item, kind)
            digest = digest_of(definition)
            pin = self._pins.get(_id(server, name, kind))
            if pin is None:
                if self._counts.get(server, 0) >= MAX_PINS_PER_SERVER:
                    logger.warning(
                        "%s has more than %d pinned items: %s %s refused", server, MAX_PINS_PER_SERVER, kind, name
                    )
                    quarantined.add(name)
                    continue
                pin = await self._first_sight(server, name, kind, definition, digest)
            elif digest != pin.digest:
                if pin.pending_digest != digest:
                    pin = await self._changed(pin, definition, digest)
            elif pin.state == "quarantined" and pin.reason == "changed":
                # The server is back to the pinned definition (after a change it was refused for): safe.
                pin = await self._restored(pin)
            if pin.state == "quarantined":
                quarantined.add(name)
        return quarantined

    def pinned(self, server: str, name: str, kind: Kind = "tool") -> Pin | None:
        """The pin of an item that is not quarantined (its definition is the one uses are checked against)."""
        pin = self._pins.get(_id(server, name, kind))
        return pin if pin is not None and pin.state == "approved" else None

    def quarantined(self, server: str, name: str, kind: Kind = "tool") -> bool:
        """Whether a use of ``name`` must be refused (from memory; ``observe`` keeps it current)."""
        pin = self._pins.get(_id(server, name, kind))
        return pin is not None and pin.state == "quarantined"

    def reason(self, server: str, name: str, kind: Kind = "tool") -> Reason | None:
        pin = self._pins.get(_id(server, name, kind))
        return pin.reason if pin is not None and pin.state == "quarantined" else None

    async def flag(self, server: str, name: str, kind: Kind, reason: Reason, findings: Sequence[str]) -> bool:
        """Quarantine a pinned item for a reason found outside its own definition (e.g. shadowing).

        An administrator's approval of the same definition stands: it is not flagged again. Returns whether
        the item is quarantined now."""
        pin = self._pins.get(_id(server, name, kind))
        if pin is None:
            return False
        if pin.state == "quarantined" or pin.reason == "approved":
            return pin.state == "quarantined"
        await self._write(pin, state="quarantined", reason=reason, findings=tuple(findings), changed_at=self._clock())
        logger.warning("%s %s of %s quarantined (%s): %s", kind, name, server, reason, "; ".join(findings)[:300])
        return True

    def _inspect(self, kind: Kind, definition: Mapping[str, JSONValue]) -> tuple[str, ...]:
        if self._inspector is None:
            return ()
        try:
            return tuple(self._inspector(kind, definition))
        except Exception:  # a crashing scan must not let the item through
            logger.exception("the definition scan failed: the item is quarantined")
            return ("scan_failed",)

    async def _first_sight(
        self, server: str, name: str, kind: Kind, definition: dict[str, JSONValue], digest: str
    ) -> Pin:
        findings = self._inspect(kind, definition)
        reason: Reason | None = "flagged" if findings else "new" if self._mode == "strict" else None
        state: State = "approved" if reason is None else "quarantined"
        now = self._clock()
        values = {
            "id": _id(server, name, kind),
            "kind": kind,
            "server": server,
            "name": name,
            "digest": digest,
            "definition": definition,
            "state": state,
            "pending_digest": None,
            "pending": None,
            "first_seen": now,
            "changed_at": None,
            "reason": reason,
            "findings": list(findings) or None,
        }
        async with self._db.transaction() as connection:
            await records.upsert(connection, ToolPinRow, values, (ToolPinRow.id,))
        pin = Pin(server, name, digest, dict(definition), state, None, None, now, None, kind, reason, findings)
        self._pins[_id(server, name, kind)] = pin
        self._counts[server] = self._counts.get(server, 0) + 1
        if reason == "flagged":
            logger.warning("%s %s of %s is quarantined: %s", kind, name, server, "; ".join(findings)[:300])
        elif reason == "new":
            logger.warning("%s %s of %s is new: quarantined until approved (strict pinning)", kind, name, server)
        return pin

    async def _changed(self, pin: Pin, definition: dict[str, JSONValue], digest: str) -> Pin:
        findings = self._inspect(pin.kind, definition)
        changed = await self._write(
            pin,
            state="quarantined",
            reason="changed",
            findings=findings,
            pending=dict(definition),
            pending_digest=digest,
            changed_at=self._clock(),
        )
        logger.warning(
            "%s %s of %s changed its definition: quarantined (see mcp-bastion pins diff)",
            pin.kind,
            pin.name,
            pin.server,
        )
        return changed

    async def _restored(self, pin: Pin) -> Pin:
        restored = await self._write(pin, state="approved", reason=None, findings=(), pending=None, pending_digest=None)
        logger.info("%s %s of %s is back to its pinned definition", pin.kind, pin.name, pin.server)
        return restored

    async def _write(self, pin: Pin, **changes: Any) -> Pin:
        """Update one pin's row and its memory copy with the same values."""
        values = {**changes}
        if "findings" in values:
            values["findings"] = list(values["findings"]) or None
        async with self._db.transaction() as connection:
            await connection.execute(
                update(ToolPinRow).where(ToolPinRow.id == _id(pin.server, pin.name, pin.kind)).values(values)
            )
        updated = dataclasses.replace(pin, **changes)
        self._pins[_id(pin.server, pin.name, pin.kind)] = updated
        return updated
