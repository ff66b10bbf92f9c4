"""Stage ``throttle``: token buckets per user, per OAuth client, and per (user, tool).

Every client request takes one token from the caller's bucket and from its client's bucket; a
``tools/call`` also from the bucket of that user and tool. An empty bucket refuses with ``RateLimited``
(HTTP 429 + ``Retry-After`` for a single message, a JSON-RPC error either way) naming the bucket in its
reason. Buckets live in-process or, with ``policy.rate_limits.redis_url``, in Redis shared by every
replica; a Redis that cannot be reached refuses the request (``Unavailable``, 503): never unlimited.
"""

from __future__ import annotations

from typing import ClassVar

from mcp_bastion.errors import RateLimited
from mcp_bastion.exchange import Exchange
from mcp_bastion.policy.ratelimit import Buckets, Rate


class Throttle:
    name: ClassVar[str] = "throttle"

    def __init__(
        self, buckets: Buckets, *, per_user: Rate | None, per_client: Rate | None, per_tool: Rate | None
    ) -> None:
        self.buckets = buckets
        self.per_user = per_user
        self.per_client = per_client
        self.per_tool = per_tool

    async def __call__(self, exchange: Exchange) -> None:
        message = exchange.maybe_message
        if message is None or message.kind != "request":
            return
        principal = exchange.principal
        if self.per_user is not None:
            await self._take("user", f"user\x1f{principal.key}", self.per_user)
        if self.per_client is not None and principal.client_id:
            await self._take("client", f"client\x1f{principal.client_id}", self.per_client)
        if self.per_tool is not None and message.method == "tools/call":
            name = message.params.get("name")
            if isinstance(name, str):
                await self._take("tool", f"tool\x1f{principal.key}\x1f{exchange.endpoint}\x1f{name}", self.per_tool)

    async def _take(self, dimension: str, key: str, rate: Rate) -> None:
        wait = await self.buckets.take(key, rate)
        if wait > 0:
            raise RateLimited(
                f"{dimension} bucket empty ({rate.burst} burst)", reason=f"rate_limited_{dimension}", retry_after=wait
            )
