"""The ``Exchange``: one MCP message travelling through the gate (like mitmproxy's ``Flow``).

Fields are set by the stage named in each field's docstring. The class uses ``__slots__`` and leaves
stage-owned fields unassigned until their stage runs, so reading one too early raises ``AttributeError``
(and the driver turns that into ``InternalError``): a stage-order bug fails closed instead of reading a
default that looks like a decision.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from mcp_bastion.errors import BastionError
from mcp_bastion.jsonrpc.message import Body, Message

if TYPE_CHECKING:
    from mcp_bastion.policy.engine import Decision as PolicyDecision
    from mcp_bastion.scan.results import Finding
    from mcp_bastion.sessions import Session
    from mcp_bastion.upstream.base import Channel, Reply, Upstream

Era = Literal["handshake", "modern"]


@dataclass(frozen=True, slots=True)
class HTTPFacts:
    """What the ASGI edge knows about the HTTP request carrying the message."""

    method: str
    path: str
    scheme: str
    headers: Mapping[str, str]
    """Lower-cased names; repeated headers joined with ', '."""
    client_addr: str
    read_body: Callable[[], Awaitable[bytes]]
    """Reads the whole body within the size and time limits (raises ``PayloadTooLarge``/``MalformedRequest``)."""
    tls_version: str | None = None
    client_cert_der: bytes | None = None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the end user (or machine client) every decision is made for."""

    subject: str
    issuer: str
    """Token issuer, or ``mtls`` for a client-certificate identity."""
    method: Literal["bearer", "mtls", "none"]
    client_id: str | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)
    expires_at: float | None = None
    roles: frozenset[str] = field(default_factory=frozenset)
    """Roles from the token's ``roles`` claim (RFC 9068 §2.2.3.1) or the issuer's configured claim."""
    preferred_username: str | None = None
    """The human-readable name (OIDC ``preferred_username``); policies see ``subject`` when absent."""
    token: str | None = field(default=None, repr=False, compare=False)
    """The bearer token itself, kept only for RFC 8693 token exchange (``delegation.exchange``) at the
    upstream's authorization server: never forwarded to an upstream, never logged."""

    @property
    def username(self) -> str:
        return self.preferred_username or self.subject

    @property
    def key(self) -> str:
        """Stable identity key: sessions and upstream channels are bound to it."""
        return f"{self.issuer}\x1f{self.subject}"


class Exchange:
    """One message through the gate, from the HTTP edge to the audit record."""

    __slots__ = (
        "answer_error",
        "answered",
        "batch_index",
        "body",
        "channel",
        "decision",
        "endpoint",
        "era",
        "findings",
        "http",
        "message",
        "policy_version",
        "principal",
        "rejection",
        "reply",
        "request_id",
        "session",
        "started",
        "upstream",
        "upstream_status",
    )

    http: HTTPFacts
    """Set by the ASGI edge before the pipeline runs."""
    endpoint: str
    """The upstream name from the URL path; set by the ASGI edge."""
    upstream: Upstream
    """Set by the ASGI edge (the endpoint resolved to its upstream)."""
    request_id: str
    """Gateway-unique id for correlating logs and the audit record; set at creation."""
    started: float
    """Monotonic start time; set at creation."""
    principal: Principal
    """Set by ``authenticate``."""
    body: Body
    """Set by ``parse``: the whole parsed POST body."""
    message: Message
    """Set by the driver after ``parse`` (one per batch item); never set for GET and DELETE."""
    batch_index: int | None
    """Position in a batch, or None; set by ``parse``."""
    era: Era
    """Set by ``session``: handshake-era (session id) or modern (stateless envelope)."""
    session: Session | None
    """Set by ``session``: the gateway session this message belongs to (None in the modern era)."""
    channel: Channel
    """Set by ``session``: the upstream channel the message is forwarded on."""
    decision: PolicyDecision | None
    """Set by ``authorize``: the policy's decision (None: not decided by policy, e.g. ``initialize``)."""
    policy_version: str | None
    """Set by ``authorize``: the version of the policy set that decided."""
    reply: Reply
    """Set by ``forward``: the upstream's answer (JSON, SSE stream, or accepted)."""
    upstream_status: int | None
    """Set by ``forward``."""
    rejection: BastionError | None
    """Set by the driver: why the exchange was refused or failed (None when it went through)."""
    answered: bool
    """Set by the driver: a response to the request went back (False for a stream closed without one)."""
    answer_error: int | None
    """Set by the driver: the JSON-RPC error code of that response, when it was an error."""
    findings: tuple[Finding, ...]
    """Added to by ``inspect``: what result inspection found (empty until it runs, and for most exchanges)."""

    def __init__(self, http: HTTPFacts, endpoint: str, upstream: Upstream, request_id: str) -> None:
        self.http = http
        self.endpoint = endpoint
        self.upstream = upstream
        self.request_id = request_id
        self.started = time.monotonic()
        self.rejection = None
        self.batch_index = None
        self.answered = False
        self.answer_error = None
        self.findings = ()
        self.decision = None
        self.policy_version = None

    def child(self, message: Message, index: int) -> Exchange:
        """A sibling exchange for one message of a batch: same HTTP facts and principal, own audit record."""
        twin = Exchange(self.http, self.endpoint, self.upstream, f"{self.request_id}.{index}")
        twin.principal = self.principal
        twin.body = self.body
        twin.message = message
        twin.batch_index = index
        return twin

    # Typed reads of fields that may legitimately be unset (the audit record and the HTTP edge need them).
    @property
    def maybe_message(self) -> Message | None:
        """The message, or None for GET/DELETE and for exchanges refused before parsing."""
        return getattr(self, "message", None)

    @property
    def maybe_principal(self) -> Principal | None:
        return getattr(self, "principal", None)

    @property
    def maybe_body(self) -> Body | None:
        return getattr(self, "body", None)

    @property
    def maybe_session(self) -> Session | None:
        return getattr(self, "session", None)

    @property
    def maybe_reply(self) -> Reply | None:
        return getattr(self, "reply", None)
