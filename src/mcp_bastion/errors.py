"""The one exception tree of mcp-bastion.

Every failure the gateway can report is one of these classes. Each class carries stable data as class
attributes: ``reason`` (a snake_case code used in audit records and asserted by tests), ``http_status``,
``jsonrpc_code`` and ``public_message`` (the only text a client ever sees). The instance ``detail`` is
for the audit log and the operator's log only; it is never rendered to a client.

::

    BastionError
    ├── ConfigError             startup only; names the setting and the bad value
    ├── Rejected                the gate refused; rendered to the client; always audited
    │   ├── TransportRejected   not https / bad Host / bad Origin / client certificate refused
    │   ├── Unauthenticated     401 + WWW-Authenticate (RFC 6750, RFC 9728 resource_metadata)
    │   ├── Forbidden           the caller is known but may not do this
    │   │   ├── PolicyDenied    no policy permits it, or one forbids it (JSON-RPC error, HTTP 200)
    │   │   ├── InsufficientScope  the token lacks a scope the call needs: 403 + WWW-Authenticate
    │   │   ├── CredentialMissing  the user has no credential of their own for this upstream
    │   │   └── UpstreamAuthorizationRequired  MCP -32042: the user must link the upstream once (a URL)
    │   ├── SessionRejected     unknown, expired or foreign Mcp-Session-Id (all look alike: 404)
    │   ├── MalformedRequest    JSON-RPC -32600
    │   │   └── ParseFailed     JSON-RPC -32700
    │   ├── MethodDenied        method not on the allow-list: JSON-RPC -32601
    │   ├── ToolQuarantined     a tool/prompt/resource changed since pinned, is new (strict), or looks unsafe
    │   ├── InvalidArguments    JSON-RPC -32602
    │   │   └── UnsafeArgument  an argument aimed at a sink: path escape, shell metacharacters, SQL, SSRF
    │   ├── ResultBlocked       the result carried something that must not reach the model (secret, injection)
    │   ├── ResultInvalid       the result breaks the tool's pinned outputSchema
    │   ├── MethodNotAllowed    HTTP method not served on this path (405)
    │   ├── NotFound            no such endpoint (404)
    │   ├── NotAcceptable       Accept rules out JSON and SSE (406)
    │   ├── UnsupportedMediaType  POST body not application/json (415)
    │   ├── PayloadTooLarge     body, header block or nesting over its limit (413)
    │   └── RateLimited         429 + Retry-After
    ├── ClientDisconnected      the client went away mid-exchange (audited as abandoned, never rendered)
    ├── UpstreamError           502, mapped at the boundary from client/subprocess errors
    │   └── UpstreamTimeout     504
    ├── Unavailable             a store the gate needs cannot be read: 503, fail closed
    └── InternalError           a bug; opaque to the client, precise in the audit record

Translate foreign exceptions at the boundary into the most specific class here (``raise X(...) from exc``).
Rendering happens in one place (``mcp_bastion.asgi.render``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Final

if TYPE_CHECKING:
    from mcp_bastion.jsonrpc.message import JSONValue

# JSON-RPC 2.0 §5.1 codes, and the implementation-defined range we use for gateway refusals.
PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
GATEWAY_REFUSED: Final = -32001
"""Server-defined code (-32000..-32099) for 'the gateway refused this message'."""
UPSTREAM_FAILED: Final = -32002
SERVICE_UNAVAILABLE: Final = -32003


class BastionError(Exception):
    """Base of every error raised by mcp-bastion."""

    reason: ClassVar[str] = "error"
    http_status: ClassVar[int] = 500
    jsonrpc_code: ClassVar[int] = INTERNAL_ERROR
    public_message: ClassVar[str] = "internal error"

    def __init__(self, detail: str = "", *, reason: str | None = None) -> None:
        super().__init__(detail or self.public_message)
        self.detail = detail
        if reason is not None:
            # A more specific stable code for the same class (e.g. "token_expired" for Unauthenticated).
            self.reason = reason  # type: ignore[misc]

    @property
    def public_reason(self) -> str:
        """The reason code shown to the client (the audit record always has the precise ``reason``)."""
        return self.reason

    def public_data(self) -> dict[str, JSONValue]:
        """More the client may see in the JSON-RPC error's ``data`` (besides ``reason``); usually nothing."""
        return {}


class ConfigError(BastionError):
    """A setting is wrong; raised at startup only, with the setting's path and the bad value."""

    reason = "config_error"


class Rejected(BastionError):
    """The gate refused the message. Rendered to the client and always audited."""

    reason = "rejected"
    http_status = 400
    jsonrpc_code = GATEWAY_REFUSED
    public_message = "request refused"


class TransportRejected(Rejected):
    """The HTTP request itself is not acceptable: scheme, Host, Origin, content type, client certificate."""

    reason = "transport_rejected"
    http_status = 403
    public_message = "request refused at the transport layer"


class Unauthenticated(Rejected):
    """No valid credential. Rendered as 401 with ``WWW-Authenticate`` (RFC 6750 §3, RFC 9728 §5.1)."""

    reason = "unauthenticated"
    http_status = 401
    public_message = "authentication required"

    def __init__(self, detail: str = "", *, reason: str | None = None, error: str = "invalid_token") -> None:
        super().__init__(detail, reason=reason)
        self.error = error
        """RFC 6750 §3.1 error code for the WWW-Authenticate header ('' when no credential was sent)."""


class Forbidden(Rejected):
    """The caller is known but may not do this."""

    reason = "forbidden"
    http_status = 403
    public_message = "not permitted"


class PolicyDenied(Forbidden):
    """The policy does not allow this call (``reason``: ``policy_no_permit``, ``policy_forbid`` or
    ``policy_error``). A JSON-RPC error the model can read; the deciding policies go to the audit only."""

    reason = "policy_denied"
    http_status = 200
    public_message = "not permitted by policy"

    def __init__(self, detail: str = "", *, reason: str | None = None, policies: tuple[str, ...] = ()) -> None:
        super().__init__(detail, reason=reason)
        self.policies = policies
        """The forbid policies that denied (empty when simply no policy permitted), for the audit record."""

    @property
    def public_reason(self) -> str:
        return "policy_denied"  # which rule decided is for the audit log, not for the caller


class InsufficientScope(Forbidden):
    """The token lacks a scope the call needs: 403 with ``WWW-Authenticate: Bearer error="insufficient_scope",
    scope="..."`` (RFC 6750 §3.1; MCP's step-up authorization), so the client can ask for it."""

    reason = "insufficient_scope"
    public_message = "insufficient scope"

    def __init__(self, detail: str = "", *, reason: str | None = None, scopes: frozenset[str] = frozenset()) -> None:
        super().__init__(detail, reason=reason)
        self.scopes = scopes
        """Every scope the call needs (RFC 6750 §3.1: the scope necessary to access the resource)."""


class CredentialMissing(Forbidden):
    """The user has no credential of their own for this upstream (an administrator must set one): the call
    is refused rather than made with no credential or someone else's."""

    reason = "upstream_credential_missing"
    http_status = 200
    public_message = "no credential for this server: ask an administrator to set one"


URL_ELICITATION_REQUIRED: Final = -32042
"""MCP 2025-11-25: the request needs the user to visit a URL first (URL-mode elicitation)."""


class UpstreamAuthorizationRequired(Forbidden):
    """The user has not linked this upstream yet (``delegation.oauthlink``): MCP's URL elicitation error,
    whose data carries the gateway URL where they sign in once."""

    reason = "upstream_authorization_required"
    http_status = 200
    jsonrpc_code = URL_ELICITATION_REQUIRED
    public_message = "this server needs you to sign in to it once"

    def __init__(
        self,
        detail: str = "",
        *,
        reason: str | None = None,
        url: str = "",
        elicitation_id: str = "",
        message: str = "",
    ) -> None:
        super().__init__(detail, reason=reason)
        self.url = url
        self.elicitation_id = elicitation_id
        self.message = message

    def public_data(self) -> dict[str, JSONValue]:
        elicitation: dict[str, JSONValue] = {
            "mode": "url",
            "elicitationId": self.elicitation_id,
            "url": self.url,
            "message": self.message,
        }
        return {"elicitations": [elicitation]}


class SessionRejected(Rejected):
    """Unknown, terminated or foreign ``Mcp-Session-Id`` (the spec asks for 404 on unknown sessions)."""

    reason = "session_unknown"
    http_status = 404
    public_message = "session not found"

    @property
    def public_reason(self) -> str:
        # A session id presented by the wrong principal must look exactly like an unknown one.
        return "session_unknown"


class MalformedRequest(Rejected):
    """The body is not valid JSON or not a valid JSON-RPC 2.0 message."""

    reason = "invalid_request"
    http_status = 400
    jsonrpc_code = INVALID_REQUEST
    public_message = "invalid JSON-RPC request"


class ParseFailed(MalformedRequest):
    """The body is not valid JSON (JSON-RPC -32700)."""

    reason = "parse_error"
    jsonrpc_code = PARSE_ERROR
    public_message = "parse error"


class MethodDenied(Rejected):
    """The JSON-RPC method is not on the allow-list (unknown methods are denied by default)."""

    reason = "method_not_allowed"
    http_status = 200
    jsonrpc_code = METHOD_NOT_FOUND
    public_message = "method not found"


class ToolQuarantined(Rejected):
    """A tool's (prompt's, resource's) definition changed since the gateway pinned it (a possible rug
    pull), it is new and pinning is strict, its description was flagged as poisoned, or it imitates another
    server's tool: refused until an administrator approves it (``mcp-bastion pins``). The reason says which:
    ``<kind>_quarantined`` (changed), ``<kind>_unapproved``, ``<kind>_flagged``, ``<kind>_shadowing``."""

    reason = "tool_quarantined"
    http_status = 200
    public_message = "quarantined until an administrator reviews it"


class InvalidArguments(Rejected):
    """Parameters fail validation (JSON-RPC -32602)."""

    reason = "invalid_params"
    http_status = 200
    jsonrpc_code = INVALID_PARAMS
    public_message = "invalid params"

    def __init__(self, detail: str = "", *, reason: str | None = None, path: str | None = None) -> None:
        super().__init__(detail, reason=reason)
        self.path = path
        """The JSON path (``/customer_id``) of the argument that failed, shown to the caller (its own input)."""

    def public_data(self) -> dict[str, JSONValue]:
        return {"path": self.path} if self.path is not None else {}


class UnsafeArgument(InvalidArguments):
    """An argument that would reach a dangerous sink unsafely (``integrity.sinks``): a path outside its roots
    or with traversal, shell metacharacters, stacked or commented SQL, a URL to a non-public address. Refused,
    never rewritten. ``reason`` is ``argument_unsafe_<kind>``; the caller sees it and the JSON path, never
    the value."""

    reason = "argument_unsafe"
    public_message = "unsafe argument"


class ResultBlocked(Rejected):
    """The upstream's result carried something that must not reach the model (``scan.results``): a secret,
    PII or injected instructions, with that category's action set to ``block``. Nothing of it is passed on;
    ``reason`` names the category (``result_blocked_secret``, ``result_blocked_injection``, ...)."""

    reason = "result_blocked"
    http_status = 200
    public_message = "the result was withheld by the gateway"


class ResultInvalid(Rejected):
    """The tool's result does not match the ``outputSchema`` of its pinned definition, or lacks the
    ``structuredContent`` that schema promises. Nothing of the result is passed on."""

    reason = "result_invalid"
    http_status = 200
    public_message = "the tool's result does not match its declared output schema"

    def __init__(self, detail: str = "", *, reason: str | None = None, path: str | None = None) -> None:
        super().__init__(detail, reason=reason)
        self.path = path
        """The JSON path within ``structuredContent`` of the first violation (never the value)."""

    def public_data(self) -> dict[str, JSONValue]:
        return {"path": self.path} if self.path is not None else {}


class MethodNotAllowed(Rejected):
    """HTTP method not served on this path."""

    reason = "http_method_not_allowed"
    http_status = 405
    public_message = "method not allowed"


class NotFound(Rejected):
    """No MCP endpoint or page at this path."""

    reason = "not_found"
    http_status = 404
    public_message = "not found"


class NotAcceptable(Rejected):
    """The client's Accept header rules out every representation we could send."""

    reason = "not_acceptable"
    http_status = 406
    public_message = "not acceptable"


class UnsupportedMediaType(Rejected):
    """POST bodies must be ``application/json``."""

    reason = "unsupported_media_type"
    http_status = 415
    public_message = "content type must be application/json"


class PayloadTooLarge(Rejected):
    """Body, header block, JSON nesting or argument size over its limit."""

    reason = "payload_too_large"
    http_status = 413
    public_message = "payload too large"


class RateLimited(Rejected):
    """Too many requests; ``retry_after`` seconds go into the Retry-After header."""

    reason = "rate_limited"
    http_status = 429
    public_message = "rate limited"

    def __init__(self, detail: str = "", *, reason: str | None = None, retry_after: float = 1.0) -> None:
        super().__init__(detail, reason=reason)
        self.retry_after = retry_after


class ClientDisconnected(BastionError):
    """The client went away (closed the connection or cancelled) before the exchange finished."""

    reason = "client_disconnected"
    http_status = 499
    public_message = "client disconnected"


class UpstreamError(BastionError):
    """The upstream MCP server failed, closed, or answered something unusable."""

    reason = "upstream_error"
    http_status = 502
    jsonrpc_code = UPSTREAM_FAILED
    public_message = "upstream server error"


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer within its budget."""

    reason = "upstream_timeout"
    http_status = 504
    public_message = "upstream server timed out"


class Unavailable(BastionError):
    """A store the gate depends on cannot be read; the gate fails closed with 503."""

    reason = "unavailable"
    http_status = 503
    jsonrpc_code = SERVICE_UNAVAILABLE
    public_message = "service temporarily unavailable"


class InternalError(BastionError):
    """A bug or an unexpected exception inside the gate. Opaque to the client, precise in the audit log."""

    reason = "internal_error"
    http_status = 500
    jsonrpc_code = INTERNAL_ERROR
    public_message = "internal error"
