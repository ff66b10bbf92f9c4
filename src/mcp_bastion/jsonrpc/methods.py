"""The MCP method names the gateway knows, per direction, and the eras they belong to.

Anything not listed is unknown and denied unless an operator allow-lists it for an upstream: an unknown
method is by definition one no policy was written for.
"""

from __future__ import annotations

from typing import Final

HANDSHAKE_VERSIONS: Final = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
"""Protocol revisions negotiated with ``initialize`` and carried by ``Mcp-Session-Id`` sessions."""
MODERN_VERSIONS: Final = ("2026-07-28",)
"""Protocol revisions using the stateless per-request envelope (``server/discover``, no session)."""

CLIENT_REQUESTS: Final = frozenset(
    {
        "initialize",
        "ping",
        "server/discover",
        "tools/list",
        "tools/call",
        "resources/list",
        "resources/templates/list",
        "resources/read",
        "resources/subscribe",
        "resources/unsubscribe",
        "subscriptions/listen",
        "prompts/list",
        "prompts/get",
        "completion/complete",
        "logging/setLevel",
        "tasks/get",
        "tasks/result",
        "tasks/list",
        "tasks/cancel",
    }
)
"""Requests a client may send to a server."""

CLIENT_NOTIFICATIONS: Final = frozenset(
    {
        "notifications/initialized",
        "notifications/cancelled",
        "notifications/progress",
        "notifications/roots/list_changed",
        "notifications/tasks/status",
    }
)
"""Notifications a client may send to a server."""

DEFAULT_CLIENT_METHODS: Final = CLIENT_REQUESTS | CLIENT_NOTIFICATIONS
"""The default allow-list for client-to-server messages."""

SERVER_REQUESTS: Final = frozenset(
    {
        "ping",
        "sampling/createMessage",
        "elicitation/create",
        "roots/list",
        "tasks/get",
        "tasks/result",
        "tasks/list",
        "tasks/cancel",
    }
)
"""Requests a server may send to a client (they ride the SSE stream back)."""

NAME_PARAM: Final = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
"""The params key that names the target of a method (audited, and later decided on by policy)."""
