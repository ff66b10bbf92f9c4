"""``Refusal``: an ``OAuthError`` (RFC 6749 §4.1.2.1 / §5.2 error code) that also carries a stable ``reason``.

The RFC codes are coarse (most failures are ``invalid_request`` or ``invalid_grant``); the ``reason`` says
which rule refused, for the audit record and for tests, which assert it instead of message text. Only
``error`` and ``description`` ever reach the client.
"""

from __future__ import annotations

from mcp_bastion.oauth.service import OAuthError


class Refusal(OAuthError):
    """An OAuth refusal with the rule that caused it (``redirect_uri`` and ``state``: see ``OAuthError``)."""

    def __init__(
        self,
        error: str,
        reason: str,
        description: str = "",
        *,
        status: int = 400,
        redirect_uri: str | None = None,
        state: str | None = None,
    ) -> None:
        super().__init__(error, description, status=status, redirect_uri=redirect_uri, state=state)
        self.reason = reason
