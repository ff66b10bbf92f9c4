"""The audit record: one JSON object per exchange, allowed or refused.

Fields are stable (tools and tests read them):

- ``time`` (RFC 3339 UTC), ``request_id`` (gateway-unique), ``remote`` (client address);
- ``principal``, ``issuer``, ``client``, ``auth`` (bearer/mtls/none): who asked;
- ``server``, ``method``, ``target`` (tool name, prompt name or resource URI), ``jsonrpc_id``: what;
- ``decision`` (allow/deny/error, or abandoned when the client went away first) and ``reason`` (a
  snake_case code from ``mcp_bastion.errors``; ``ok`` when answered, ``stream_closed`` when a request's
  stream ended without an answer);
- ``status`` (HTTP status sent), ``error_code`` (the JSON-RPC error code when the upstream answered with
  an error), ``latency_ms``;
- ``detail``: the operator-facing detail of a refusal; never a secret, never sent to the client;
- ``findings`` (only when result inspection found something): ``[{category, name, count}]``, never the
  text found.

Records of other events keep these fields (``None`` where they do not apply). An egress record
(``egress_record``: a sandboxed server's connection through its egress proxy) says so in ``kind:
"egress"``; its ``method`` is the HTTP method (``CONNECT``, ``GET``), its ``target`` the ``host:port``
asked for, and it adds ``host``, ``port``, ``address`` (the vetted address connected to), ``end`` (how the
connection ended), ``bytes_up`` and ``bytes_down``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Literal

from mcp_bastion.errors import ClientDisconnected, PolicyDenied, Rejected
from mcp_bastion.exchange import Exchange
from mcp_bastion.jsonrpc.message import JSONObject, Message
from mcp_bastion.jsonrpc.methods import NAME_PARAM

Decision = Literal["allow", "deny", "error", "abandoned"]
MAX_DETAIL = 512


def build_record(exchange: Exchange, *, status: int | None, now: float | None = None) -> JSONObject:
    """Summarise a finished exchange. Reads only fields that may be unset through ``Exchange.get``."""
    rejection = exchange.rejection
    decision: Decision
    if rejection is None:
        decision = "allow"
    elif isinstance(rejection, Rejected):
        decision = "deny"
    elif isinstance(rejection, ClientDisconnected):
        decision = "abandoned"
    else:
        decision = "error"
    principal = exchange.maybe_principal
    message = exchange.maybe_message
    method: str | None = None
    target: str | None = None
    jsonrpc_id: str | int | None = None
    if isinstance(message, Message):
        method = message.method if message.kind != "response" else "(response)"
        jsonrpc_id = message.id
        key = NAME_PARAM.get(message.method or "")
        value = message.params.get(key) if key else None
        target = value if isinstance(value, str) else None
    elif exchange.http.method != "POST":
        method = f"(http {exchange.http.method})"
    record: JSONObject = {
        "time": datetime.fromtimestamp(time.time() if now is None else now, UTC).isoformat(timespec="milliseconds"),
        "request_id": exchange.request_id,
        "principal": principal.subject if principal else None,
        "issuer": principal.issuer if principal else None,
        "client": principal.client_id if principal else None,
        "auth": principal.method if principal else None,
        "server": exchange.endpoint,
        "method": method,
        "target": target,
        "jsonrpc_id": jsonrpc_id,
        "decision": decision,
        "reason": _reason(exchange),
        "status": status,
        "error_code": exchange.answer_error,
        "latency_ms": round((time.monotonic() - exchange.started) * 1000, 3),
        "remote": exchange.http.client_addr,
    }
    if exchange.policy_version is not None:
        record["policy_version"] = exchange.policy_version
    decided = exchange.decision
    if decided is not None:
        policies = decided.policies
    else:
        policies = rejection.policies if isinstance(rejection, PolicyDenied) else ()
    if policies:
        record["policies"] = list(policies)
    if rejection is not None and rejection.detail:
        record["detail"] = rejection.detail[:MAX_DETAIL]
    if exchange.findings:
        record["findings"] = [finding.as_json() for finding in exchange.findings]
    return record


def _reason(exchange: Exchange) -> str:
    if exchange.rejection is not None:
        return exchange.rejection.reason
    message = exchange.maybe_message
    if message is not None and message.kind == "request" and not exchange.answered:
        # The stream closed without an answer: cancelled, or the server will answer on a resumed stream.
        return "stream_closed"
    return "ok"


def connection_record(reason: str, remote: str, *, request_id: str, now: float | None = None) -> JSONObject:
    """The record of a connection refused before any request reached the gate (slow or oversized head)."""
    status = 400 if reason == "headers_too_large" else None
    return _unattributed(now, request_id, None, "(connection)", None, "deny", reason, status, None, remote)


def _unattributed(
    now: float | None,
    request_id: str,
    server: str | None,
    method: str | None,
    target: str | None,
    decision: Decision,
    reason: str,
    status: int | None,
    latency_ms: float | None,
    remote: str | None,
) -> JSONObject:
    """The common fields, in ``build_record``'s order, of a record no caller identity stands behind."""
    return {
        "time": datetime.fromtimestamp(time.time() if now is None else now, UTC).isoformat(timespec="milliseconds"),
        "request_id": request_id,
        "principal": None,
        "issuer": None,
        "client": None,
        "auth": None,
        "server": server,
        "method": method,
        "target": target,
        "jsonrpc_id": None,
        "decision": decision,
        "reason": reason,
        "status": status,
        "error_code": None,
        "latency_ms": latency_ms,
        "remote": remote,
    }


def egress_record(
    server: str,
    *,
    request_id: str,
    method: str | None,
    host: str | None,
    port: int | None,
    address: str | None,
    decision: Decision,
    reason: str,
    status: int | None,
    end: str | None,
    bytes_up: int,
    bytes_down: int,
    latency_ms: float,
    detail: str = "",
    now: float | None = None,
) -> JSONObject:
    """The record of one connection through the egress proxy of the sandboxed server ``server``: the
    common fields (``method`` None when no request head was read), ``kind``, then where it went and how it
    ended."""
    target = None if host is None else _authority(host, port)
    record = _unattributed(
        now, request_id, server, method, target, decision, reason, status, round(latency_ms, 3), None
    )
    record |= {
        "kind": "egress",
        "host": host,
        "port": port,
        "address": address,
        "end": end,
        "bytes_up": bytes_up,
        "bytes_down": bytes_down,
    }
    if detail:
        record["detail"] = detail[:MAX_DETAIL]
    return record


def _authority(host: str, port: int | None) -> str:
    """``host:port`` as a client writes it: an IPv6 address in brackets (unless the client's text kept them)."""
    bracketed = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return bracketed if port is None else f"{bracketed}:{port}"
