"""Read a running gateway's ``kind: egress`` audit records (the sandbox's egress proxy decisions).

The proxy writes a connection's record when the connection ends, which may be a moment after the tool
that opened it has answered: ``egress_records`` waits (bounded) until the records a test expects are there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import anyio

from tests.e2e.gateway import RunningGateway

BOUND = 10.0
POLL = 0.02

Record = dict[str, object]


def egress(gw: RunningGateway, server: str) -> list[Record]:
    return [r for r in gw.audit() if r.get("kind") == "egress" and r.get("server") == server]


async def egress_records(gw: RunningGateway, server: str, ready: Callable[[list[Record]], bool] = bool) -> list[Record]:
    """``server``'s egress records, once ``ready(records)`` holds (within ``BOUND`` seconds)."""
    with anyio.fail_after(BOUND):
        while not ready(records := egress(gw, server)):
            await asyncio.sleep(POLL)
    return records


def decision(record: Record) -> tuple[object, ...]:
    """What a test compares: (method, host, port, decision, reason)."""
    return (record["method"], record["host"], record["port"], record["decision"], record["reason"])
