"""Response stage ``filter``: list results show only what the caller may use.

The answer to ``tools/list``, ``resources/list``, ``resources/templates/list`` or ``prompts/list`` is
rewritten to keep only the items ``policy.authorizer`` would let this caller call (same policy, same scope
check, one engine for the whole list). Tool definitions are learnt by the catalog on the way, and forgotten
when the server says its tools changed (``notifications/tools/list_changed``) — and a server sending a
list_changed it declared it would not send is flagged (``integrity.capabilities``). Every other message
passes unchanged, as the bytes the upstream sent.
"""

from __future__ import annotations

from typing import ClassVar

import orjson

from mcp_bastion.exchange import Exchange
from mcp_bastion.integrity.capabilities import DECLARING_METHODS, Promises
from mcp_bastion.integrity.pins import KEY, LIST_KINDS, PinStore
from mcp_bastion.jsonrpc.message import JSONValue, Message
from mcp_bastion.pipeline.authorize import caller_of
from mcp_bastion.policy.authorizer import LIST_KEYS, Authorizer
from mcp_bastion.scan.results import Finding
from mcp_bastion.upstream.base import Event


class FilterLists:
    name: ClassVar[str] = "filter"

    def __init__(self, authorizer: Authorizer, pins: PinStore | None = None) -> None:
        self.authorizer = authorizer
        self.pins = pins
        self.promises = Promises()
        """What each upstream declared about list_changed notifications (``integrity.capabilities``)."""

    async def __call__(self, exchange: Exchange, event: Event) -> Event:
        message = event.message
        if message is not None and message.kind == "notification":
            method = message.method or ""
            family = self.promises.broken(exchange.endpoint, method)
            if family is not None:
                exchange.findings += (Finding("integrity", f"{family}_list_changed_undeclared", 1),)
            if method == "notifications/tools/list_changed":
                # What the catalog knows may be stale now: the next call of a tool lists the tools again
                # (the client, told the same, lists them too, and sees them filtered).
                self.authorizer.catalog.forget(exchange.endpoint)
            return event
        sent = exchange.maybe_message
        if message is None or message.kind != "response" or sent is None or message.is_error:
            return event
        result = message.raw.get("result")
        if sent.method in DECLARING_METHODS and isinstance(result, dict):
            self.promises.learn(exchange.endpoint, result)
            return event
        key = LIST_KEYS.get(sent.method or "")
        if key is None or not isinstance(result, dict):
            return event
        items = result.get(key)
        if not isinstance(items, list):
            return event
        method = sent.method or ""
        listed = len(items)
        kind = LIST_KINDS.get(method)
        if kind is not None and self.pins is not None:
            # Pins first: a changed (rug-pulled) item is neither shown nor learnt by the catalog.
            member = KEY[kind]
            held = await self.pins.observe(exchange.endpoint, [item for item in items if isinstance(item, dict)], kind)
            if held:
                items = [item for item in items if not (isinstance(item, dict) and item.get(member) in held)]
        engine = self.authorizer.engine
        caller = caller_of(exchange)
        kept: list[JSONValue] = [
            item for item in items if self.authorizer.visible(engine, caller, exchange.endpoint, method, item)
        ]
        if len(kept) == listed:
            return event
        raw = {**message.raw, "result": {**result, key: kept}}
        rewritten = Message(message.kind, raw, message.id, message.method)
        return Event(orjson.dumps(raw), rewritten, event.event_id, event.retry_ms)
