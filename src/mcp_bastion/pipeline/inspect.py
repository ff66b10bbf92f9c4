"""Response stage ``inspect``: results are checked and cleaned before the client (and its model) reads them.

Only the answers to ``tools/call``, ``resources/read`` and ``prompts/get`` are touched; every other event
passes as the bytes the upstream sent. An error answer has its ``message`` and ``data`` scanned (a
server's exception text is where connection strings leak). For a result, in order:

1. ``outputSchema``: when the tool's *pinned* definition declares one, a result that is not an error must
   carry ``structuredContent`` (MCP 2025-06-18, "Structured Content") and it must validate against the
   schema (``jsonschema-rs``, compiled once per pinned digest, formats checked, remote refs never fetched);
   otherwise ``ResultInvalid`` (``result_invalid``; an unusable schema: ``output_schema_unusable``);
2. the size: a result over ``max_scan_bytes`` is refused (``result_blocked_too_large``) rather than
   passed unscanned — fail closed;
3. ``scan.results.ResultInspector``: control characters stripped, secrets, PII and injected instructions
   redacted, annotated or blocked (``ResultBlocked``, reason ``result_blocked_<category>``).

Invariants:
- a refused result sends nothing of itself to the client: the stage raises, the gate answers the request
  with the JSON-RPC error and audits the refusal with the findings;
- what was found goes to ``Exchange.findings`` (the audit record lists categories, names and counts);
- an unchanged result is forwarded as the upstream's bytes (no re-serialisation); a changed one is
  re-serialised once (orjson) into a new ``Event`` with the same SSE id.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

import orjson

from mcp_bastion.errors import ResultBlocked, ResultInvalid
from mcp_bastion.exchange import Exchange
from mcp_bastion.integrity.arguments import SchemaCache, compile_schema
from mcp_bastion.integrity.pins import PinStore
from mcp_bastion.jsonrpc.message import JSONObject, Message
from mcp_bastion.scan.results import INSPECTED_METHODS, Inspection, ResultInspector
from mcp_bastion.upstream.base import Event

MAX_SCAN_BYTES: Final = 4 * 1_048_576
"""Largest result scanned (``inspect.max_scan_bytes``); larger ones are refused, never passed unscanned."""


class InspectResults:
    name: ClassVar[str] = "inspect"

    def __init__(
        self, inspector: ResultInspector, pins: PinStore | None = None, *, max_scan_bytes: int = MAX_SCAN_BYTES
    ) -> None:
        self.inspector = inspector
        self.pins = pins
        self.max_scan_bytes = max_scan_bytes
        self.outputs = SchemaCache()
        """Compiled ``outputSchema`` validators by pinned digest."""

    async def __call__(self, exchange: Exchange, event: Event) -> Event:
        message = event.message
        if message is None or message.kind != "response":
            return event
        sent = exchange.maybe_message
        method = sent.method if sent is not None else None
        if sent is None or method not in INSPECTED_METHODS:
            return event
        if message.is_error:
            return self._error(exchange, event, message)
        result = message.raw.get("result")
        if not isinstance(result, dict):
            raise ResultInvalid(f"{method}: the result is not an object", reason="result_malformed")
        if method == "tools/call":
            self._check_output(exchange, sent, result)
        self._check_size(event, f"{method} result")
        return self._apply(exchange, event, message, "result", self.inspector.inspect(method, result))

    def _error(self, exchange: Exchange, event: Event, message: Message) -> Event:
        """An error answer: its message and data are scanned like a result (exception texts leak secrets)."""
        error = message.raw.get("error")
        if not isinstance(error, dict):
            return event
        self._check_size(event, "error answer")
        return self._apply(exchange, event, message, "error", self.inspector.inspect_error(error))

    def _check_size(self, event: Event, what: str) -> None:
        if len(event.data) > self.max_scan_bytes:
            raise ResultBlocked(
                f"{what} of {len(event.data)} bytes, over max_scan_bytes {self.max_scan_bytes}",
                reason="result_blocked_too_large",
            )

    @staticmethod
    def _apply(exchange: Exchange, event: Event, message: Message, key: str, inspection: Inspection) -> Event:
        """Record what was found; refuse a blocked answer; pass the bytes on unless something changed."""
        if inspection.findings:
            exchange.findings = (*exchange.findings, *inspection.findings)
        blocked = inspection.blocked
        if blocked is not None:
            names = ", ".join(sorted({f.name for f in inspection.findings if f.category == blocked}))
            raise ResultBlocked(f"{key}: {blocked} found ({names})", reason=f"result_blocked_{blocked}")
        if not inspection.changed:
            return event
        return _rewritten(event, message, key, inspection.result)

    def _check_output(self, exchange: Exchange, sent: Message, result: JSONObject) -> None:
        """Raise ``ResultInvalid`` unless the result keeps the pinned tool's ``outputSchema`` promise."""
        name = sent.params.get("name")
        if self.pins is None or not isinstance(name, str):
            return
        pin = self.pins.pinned(exchange.endpoint, name)
        if pin is None or "outputSchema" not in pin.definition or result.get("isError") is True:
            return
        schema = pin.definition["outputSchema"]
        structured = result.get("structuredContent")
        if structured is None:
            raise ResultInvalid(f"{name}: no structuredContent, though its outputSchema declares it", path="")
        validator: Any = self.outputs.get(pin.digest, lambda: compile_schema(schema))
        if isinstance(validator, Exception):
            raise ResultInvalid(
                f"{name}: its outputSchema cannot be used: {validator}", reason="output_schema_unusable"
            )
        for error in validator.iter_errors(structured):
            path = "/" + "/".join(str(part) for part in error.instance_path)
            where = "/".join(str(part) for part in error.schema_path)
            raise ResultInvalid(f"{name}: structuredContent at {path} violates {where}", path=path)


def _rewritten(event: Event, message: Message, key: str, value: JSONObject) -> Event:
    """The event with ``message[key]`` replaced, serialised once; the SSE framing facts kept."""
    raw = {**message.raw, key: value}
    return Event(
        orjson.dumps(raw), Message(message.kind, raw, message.id, message.method), event.event_id, event.retry_ms
    )
