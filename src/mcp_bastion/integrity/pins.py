"""Pinned tool definitions: the rug-pull defence.

The first time the gateway sees a server's tool (in any ``tools/list`` answer, the client's or its own),
it records a pin: a digest of everything the model reads or the gateway decides on (name, title,
description, input and output schema, annotations) and a full copy. Later answers are compared with the
pin: a tool whose definition changed is *quarantined* — hidden from lists and refused when called — until
an administrator looks at the change (``mcp-bastion pins diff``) and approves it (the new definition
becomes the pin) or rejects it (the change is dropped; the tool stays quarantined while the server keeps
sending it, and is back as soon as the server returns to the pinned definition). In ``strict`` mode a tool
seen for the first time is quarantined too, until approved.

Invariants:
- the decision for a definition is made from memory (loaded at startup, kept current by this process's
  own writes and re-read every ``REFRESH_SECONDS`` for other processes' approvals); the database is written
  only when something is new or changed, so the list path costs a digest per tool;
- a quarantined tool is never shown and never callable, whatever the policy says;
- the digest covers canonical JSON (sorted keys, no whitespace), so key order cannot hide or fake a change.
"""

from __future__ import annotations

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

FIELDS: Final = ("name", "title", "description", "inputSchema", "outputSchema", "annotations")
"""What a pin covers: everything the model reads and the gateway decides on."""
REFRESH_SECONDS: Final = 10.0
PinMode = Literal["trust_on_first_use", "strict"]
State = Literal["approved", "quarantined"]


def definition_of(tool: Mapping[str, JSONValue]) -> dict[str, JSONValue]:
    return {name: tool[name] for name in FIELDS if name in tool}


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


def _pin(row: Sequence[Any]) -> Pin:
    _id, server, name, digest, definition, state, pending_digest, pending, first_seen, changed_at = row
    return Pin(server, name, digest, definition, state, pending_digest, pending, first_seen, changed_at)


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
)


def _id(server: str, name: str) -> str:
    return f"{server}\x1f{name}"


async def list_pins(db: Database, server: str | None = None) -> list[Pin]:
    query = select(*_COLUMNS).order_by(ToolPinRow.server, ToolPinRow.name)
    if server is not None:
        query = query.where(ToolPinRow.server == server)
    async with db.read() as connection:
        return [_pin(row) for row in (await connection.execute(query)).all()]


async def approve(db: Database, server: str, name: str, now: float | None = None) -> bool:
    """Make the waiting definition the pin (or release a first-seen tool in strict mode)."""
    pins = {pin.name: pin for pin in await list_pins(db, server)}
    pin = pins.get(name)
    if pin is None or pin.state != "quarantined":
        return False
    values: dict[str, object] = {"state": "approved", "pending": None, "pending_digest": None}
    if pin.pending is not None and pin.pending_digest is not None:
        values.update({"definition": pin.pending, "digest": pin.pending_digest})
    values["changed_at"] = time.time() if now is None else now
    async with db.transaction() as connection:
        await connection.execute(update(ToolPinRow).where(ToolPinRow.id == _id(server, name)).values(values))
    return True


async def reject(db: Database, server: str, name: str) -> bool:
    """Drop the waiting definition: the pin stays; the tool is back only when the server sends the pin again."""
    async with db.transaction() as connection:
        result = await connection.execute(
            update(ToolPinRow)
            .where(ToolPinRow.id == _id(server, name), ToolPinRow.pending_digest.is_not(None))
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
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._mode = mode
        self._clock = clock
        self._monotonic = monotonic
        self._pins: dict[str, Pin] = {}
        self._loaded_at: float | None = None

    async def load(self) -> None:
        self._pins = {_id(pin.server, pin.name): pin for pin in await list_pins(self._db)}
        self._loaded_at = self._monotonic()

    async def observe(self, server: str, tools: Sequence[Mapping[str, JSONValue]]) -> set[str]:
        """Compare one list answer's tools with their pins (pinning new ones); the names to quarantine."""
        if self._loaded_at is None or self._monotonic() - self._loaded_at >= REFRESH_SECONDS:
            await self.load()
        quarantined: set[str] = set()
        for tool in tools:
            name = tool.get("name")
            if not isinstance(name, str):
                continue
            definition = definition_of(tool)
            digest = digest_of(definition)
            pin = self._pins.get(_id(server, name))
            if pin is None:
                pin = await self._first_sight(server, name, definition, digest)
            elif digest != pin.digest:
                if pin.pending_digest != digest:
                    pin = await self._changed(pin, definition, digest)
            elif pin.state == "quarantined" and pin.changed_at is not None:
                # The server is back to the pinned definition (after a change it was refused for): safe.
                pin = await self._restored(pin)
            if pin.state == "quarantined":
                quarantined.add(name)
        return quarantined

    def pinned(self, server: str, name: str) -> Pin | None:
        """The pin of a tool that is not quarantined (its definition is the one calls are checked against)."""
        pin = self._pins.get(_id(server, name))
        return pin if pin is not None and pin.state == "approved" else None

    def quarantined(self, server: str, name: str) -> bool:
        """Whether a call of ``name`` must be refused (from memory; ``observe`` keeps it current)."""
        pin = self._pins.get(_id(server, name))
        return pin is not None and pin.state == "quarantined"

    async def _first_sight(self, server: str, name: str, definition: dict[str, JSONValue], digest: str) -> Pin:
        state: State = "quarantined" if self._mode == "strict" else "approved"
        now = self._clock()
        values = {
            "id": _id(server, name),
            "server": server,
            "name": name,
            "digest": digest,
            "definition": definition,
            "state": state,
            "pending_digest": None,
            "pending": None,
            "first_seen": now,
            "changed_at": None,
        }
        async with self._db.transaction() as connection:
            await records.upsert(connection, ToolPinRow, values, (ToolPinRow.id,))
        pin = Pin(server, name, digest, dict(definition), state, None, None, now, None)
        self._pins[_id(server, name)] = pin
        if state == "quarantined":
            logger.warning("tool %s of %s is new: quarantined until approved (strict pinning)", name, server)
        return pin

    async def _changed(self, pin: Pin, definition: dict[str, JSONValue], digest: str) -> Pin:
        now = self._clock()
        values = {"state": "quarantined", "pending": definition, "pending_digest": digest, "changed_at": now}
        async with self._db.transaction() as connection:
            await connection.execute(
                update(ToolPinRow).where(ToolPinRow.id == _id(pin.server, pin.name)).values(values)
            )
        changed = Pin(
            pin.server,
            pin.name,
            pin.digest,
            pin.definition,
            "quarantined",
            digest,
            dict(definition),
            pin.first_seen,
            now,
        )
        self._pins[_id(pin.server, pin.name)] = changed
        logger.warning(
            "tool %s of %s changed its definition: quarantined (see mcp-bastion pins diff)", pin.name, pin.server
        )
        return changed

    async def _restored(self, pin: Pin) -> Pin:
        values = {"state": "approved", "pending": None, "pending_digest": None}
        async with self._db.transaction() as connection:
            await connection.execute(
                update(ToolPinRow).where(ToolPinRow.id == _id(pin.server, pin.name)).values(values)
            )
        restored = Pin(
            pin.server, pin.name, pin.digest, pin.definition, "approved", None, None, pin.first_seen, pin.changed_at
        )
        self._pins[_id(pin.server, pin.name)] = restored
        logger.info("tool %s of %s is back to its pinned definition", pin.name, pin.server)
        return restored
