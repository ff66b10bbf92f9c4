"""What each upstream promised to notify about, and noticing when it breaks the promise.

A server declares ``capabilities.<tools|prompts|resources>.listChanged`` in its ``initialize`` (or
``server/discover``) answer. A server that sends ``notifications/tools/list_changed`` after declaring it
would not is telling its clients to re-read a list it said was fixed: the tell of a rug pull (the changed
definitions themselves are caught by the pins). The gateway passes the notification on — re-reading is
harmless, the client then sees the quarantine — and flags the server: a WARNING and a finding in the
exchange's audit record.

Invariants:
- a server is judged only after the gateway saw what it declared (no declaration seen, no verdict);
- a declaration of ``listChanged: true`` in any answer of the server counts (one server, one promise).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Final, final

from mcp_bastion.jsonrpc.message import JSONValue

logger = logging.getLogger(__name__)

FAMILIES: Final = ("tools", "prompts", "resources")
DECLARING_METHODS: Final = frozenset({"initialize", "server/discover"})


def family_of(method: str) -> str | None:
    """``notifications/tools/list_changed`` -> ``tools``; None for any other method."""
    parts = method.split("/")
    if len(parts) == 3 and parts[0] == "notifications" and parts[2] == "list_changed" and parts[1] in FAMILIES:
        return parts[1]
    return None


@final
class Promises:
    """Per upstream: the list families whose changes it declared it would announce."""

    def __init__(self) -> None:
        self._declared: dict[str, frozenset[str]] = {}

    def learn(self, server: str, result: Mapping[str, JSONValue]) -> None:
        capabilities = result.get("capabilities")
        if not isinstance(capabilities, dict):
            return
        declared = {
            family
            for family in FAMILIES
            if isinstance(entry := capabilities.get(family), dict) and entry.get("listChanged") is True
        }
        self._declared[server] = self._declared.get(server, frozenset()) | declared

    def broken(self, server: str, method: str) -> str | None:
        """The family whose undeclared ``list_changed`` this is, or None when the notification was promised."""
        family = family_of(method)
        declared = self._declared.get(server)
        if family is None or declared is None or family in declared:
            return None
        logger.warning(
            "%s sent %s although it declared %s.listChanged false: a rug-pull signal (changes stay quarantined)",
            server,
            method,
            family,
        )
        return family
