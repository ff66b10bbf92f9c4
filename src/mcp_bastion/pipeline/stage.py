"""The stage protocols and the one driver that runs them.

Stages are flat, not an onion of ``call_next``: a stage cannot forget to call the next one or swallow
errors further down. The driver:

1. runs the admission stages once per HTTP request (transport, authenticate, parse);
2. for each message of the body (one, or several in a batch) runs the request stages, the last of which
   forwards the message, then runs the response stages on every upstream event and yields it;
3. turns a ``BastionError`` into a ``Refusal`` for the client, and **any other exception into
   ``InternalError``** (fail closed; the real exception goes to the operator log and the audit detail);
4. emits exactly one audit record per exchange in ``finally``, every time: allowed, refused, failed,
   or abandoned by the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

from mcp_bastion.audit.record import build_record
from mcp_bastion.audit.sink import AuditSink
from mcp_bastion.errors import BastionError, ClientDisconnected, InternalError, Rejected
from mcp_bastion.exchange import Exchange
from mcp_bastion.upstream.base import Event, Reply

log = logging.getLogger("mcp_bastion.gate")


class Stage(Protocol):
    """A request stage: inspects or enriches the exchange, raises ``Rejected`` to refuse it."""

    name: ClassVar[str]

    async def __call__(self, exchange: Exchange) -> None: ...


class ResponseStage(Protocol):
    """A response stage: sees each upstream event of an exchange; returns it (possibly rewritten) or raises."""

    name: ClassVar[str]

    async def __call__(self, exchange: Exchange, event: Event) -> Event: ...


@dataclass(frozen=True, slots=True)
class Refusal:
    """The gate's answer when an exchange is refused or fails; always the last item for its exchange."""

    error: BastionError


Outgoing = Event | Refusal
OnOpen = Callable[[Exchange], Awaitable[None]]


def status_of(exchange: Exchange) -> int:
    """The HTTP status this exchange is answered with (also written into its audit record)."""
    error = exchange.rejection
    if error is not None:
        return error.http_status
    reply = exchange.maybe_reply
    return 202 if reply is not None and reply.kind == "accepted" else 200


class Gate:
    """Runs exchanges through the declared stages. See the module docstring for the contract."""

    def __init__(
        self,
        *,
        admission: Sequence[Stage],
        request: Sequence[Stage],
        response: Sequence[ResponseStage],
        audit: AuditSink,
    ) -> None:
        self.admission = tuple(admission)
        self.request = tuple(request)
        self.response = tuple(response)
        self._audit = audit

    async def run(self, exchange: Exchange, on_open: OnOpen | None = None) -> AsyncGenerator[tuple[Exchange, Outgoing]]:
        """Admit one HTTP request, then process each of its messages. Yields (exchange, outgoing) pairs.

        ``on_open`` is awaited once an exchange was forwarded and the upstream opened a stream, before its
        first event: a GET stream's headers must reach the client at once, not with the first event.
        """
        try:
            for stage in self.admission:
                await stage(exchange)
        except BaseException as exc:
            refusal = self._fail(exchange, exc)
            self.emit(exchange)
            if refusal is None:
                raise
            yield exchange, refusal
            return
        if exchange.http.method != "POST":  # GET stream / DELETE session: no message, one exchange
            exchanges = [exchange]
        elif not exchange.body.batch:
            exchange.message = exchange.body.messages[0]
            exchanges = [exchange]
        else:
            exchanges = [exchange.child(message, i) for i, message in enumerate(exchange.body.messages)]
        for one in exchanges:
            # aclosing: if our consumer goes away mid-stream, the inner exchange is closed (and audited) now.
            async with contextlib.aclosing(self._process(one, on_open)) as items:
                async for item in items:
                    yield item

    def run_admitted(self, exchange: Exchange) -> AsyncGenerator[tuple[Exchange, Outgoing]]:
        """Process one exchange admitted elsewhere (principal and message already set, no admission stages):
        the request stages, the response stages on each upstream event, one audit record. The aggregate
        endpoint sends its sub-requests to each real upstream through this (``upstream.aggregate``)."""
        return self._process(exchange, None)

    async def _process(self, exchange: Exchange, on_open: OnOpen | None) -> AsyncGenerator[tuple[Exchange, Outgoing]]:
        refusal: Refusal | None = None
        try:
            for stage in self.request:
                await stage(exchange)
            reply = exchange.reply
            if on_open is not None and reply.kind == "sse":
                await on_open(exchange)
            async for event in reply.events:
                for response_stage in self.response:
                    event = await response_stage(exchange, event)
                final = event.message is not None and event.message.kind == "response"
                if final:
                    exchange.answered = True
                    exchange.answer_error = _error_code(event)
                yield exchange, event
                if final:
                    break  # a request's exchange ends with its response, whatever the upstream does next
        except BaseException as exc:
            refusal = self._fail(exchange, exc)
            if refusal is None:
                raise
        finally:
            answer = exchange.maybe_reply
            if answer is not None:
                await _close_quietly(answer)
            self.emit(exchange)
        if refusal is not None:
            yield exchange, refusal

    def _fail(self, exchange: Exchange, exc: BaseException) -> Refusal | None:
        """Record why the exchange ended early. Returns the refusal to send, or None to re-raise ``exc``."""
        if isinstance(exc, GeneratorExit | asyncio.CancelledError):
            exchange.rejection = ClientDisconnected(type(exc).__name__)
            return None
        if isinstance(exc, BastionError):
            exchange.rejection = exc
            if not isinstance(exc, Rejected):
                log.warning("exchange %s failed: %s: %s", exchange.request_id, exc.reason, exc.detail)
            return Refusal(exc)
        if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: not ours to swallow
            exchange.rejection = InternalError(f"{type(exc).__name__}")
            return None
        error = InternalError(f"{type(exc).__name__}: {exc}")
        exchange.rejection = error
        log.exception("exchange %s: internal error", exchange.request_id, exc_info=exc)
        return Refusal(error)

    def emit(self, exchange: Exchange) -> None:
        """Write the exchange's single audit record. A failing sink propagates: no silent unaudited traffic."""
        self._audit.emit(build_record(exchange, status=status_of(exchange)))


async def _close_quietly(reply: Reply) -> None:
    try:
        await reply.aclose()
    except (BastionError, OSError, RuntimeError):
        log.debug("closing an upstream reply failed", exc_info=True)


def _error_code(event: Event) -> int | None:
    message = event.message
    if message is None or not message.is_error:
        return None
    error = message.raw.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, int) else None
