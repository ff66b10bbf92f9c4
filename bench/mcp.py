"""The MCP requests the benchmark sends, and a one-off HTTP client to check answers and open sessions."""

from __future__ import annotations

import http.client
import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

Mode = Literal["modern", "handshake"]

MODERN_VERSION: Final = "2026-07-28"
HANDSHAKE_VERSION: Final = "2025-11-25"
ID_PLACEHOLDER: Final = "__ID__"
"""Where the load generators put a fresh JSON-RPC id per request (ids must not repeat within a session)."""
ECHO_TEXT: Final = "hello"

_ACCEPT: Final = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


def call_body(mode: Mode, request_id: str = ID_PLACEHOLDER) -> bytes:
    """A `tools/call` of `echo`; 2026-07-28 carries its protocol version and capabilities in `_meta`."""
    params: dict[str, Any] = {"name": "echo", "arguments": {"text": ECHO_TEXT}}
    if mode == "modern":
        params["_meta"] = {
            "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
            "io.modelcontextprotocol/clientCapabilities": {},
        }
    text = json.dumps({"jsonrpc": "2.0", "id": 0, "method": "tools/call", "params": params}, separators=(",", ":"))
    return text.replace('"id":0', f'"id":{request_id}', 1).encode()


def call_headers(mode: Mode, token: str | None, session_id: str | None = None) -> dict[str, str]:
    headers = dict(_ACCEPT)
    if mode == "modern":
        headers |= {"MCP-Protocol-Version": MODERN_VERSION, "Mcp-Method": "tools/call", "Mcp-Name": "echo"}
    else:
        headers["MCP-Protocol-Version"] = HANDSHAKE_VERSION
        if session_id is not None:
            headers["Mcp-Session-Id"] = session_id
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return headers


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def message(self) -> dict[str, Any]:
        """The JSON-RPC message in the body (a JSON body, or the last `data:` event of an SSE body)."""
        if self.headers.get("content-type", "").startswith("text/event-stream"):
            data = [line[5:].strip() for line in self.body.decode().splitlines() if line.startswith("data:")]
            if not data:
                raise ValueError(f"SSE answer without data: {self.body[:200]!r}")
            loaded = json.loads(data[-1])
        else:
            loaded = json.loads(self.body)
        if not isinstance(loaded, dict):
            raise ValueError(f"not a JSON-RPC message: {self.body[:200]!r}")
        return loaded


def request(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes | None = None,
    cafile: Path | None = None,
    timeout: float = 10.0,
) -> Answer:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
        conn = http.client.HTTPSConnection(host, parts.port or 443, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(host, parts.port or 80, timeout=timeout)
    try:
        conn.request(method, parts.path or "/", body=body, headers=dict(headers))
        resp = conn.getresponse()
        return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def check_echo(url: str, mode: Mode, headers: Mapping[str, str], cafile: Path | None) -> None:
    """One `tools/call` that must come back 200 with the echoed text; raises `RuntimeError` otherwise."""
    answer = request("POST", url, headers, call_body(mode, "7"), cafile)
    problem = ""
    if answer.status != 200:
        problem = f"HTTP {answer.status}"
    else:
        try:
            message = answer.message()
            content = message["result"]["content"]
            if message.get("id") != 7 or content[0]["text"] != ECHO_TEXT:
                problem = "unexpected result"
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            problem = f"unreadable answer ({exc})"
    if problem:
        raise RuntimeError(f"{mode} tools/call to {url}: {problem}: {answer.body[:300]!r}")


def open_session(url: str, token: str | None, cafile: Path | None) -> str:
    """Handshake-era `initialize` + `notifications/initialized`; returns the `Mcp-Session-Id`."""
    headers = dict(_ACCEPT)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": HANDSHAKE_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "mcp-bastion-bench", "version": "1"},
        },
    }
    answer = request("POST", url, headers, json.dumps(init).encode(), cafile)
    session_id = answer.headers.get("mcp-session-id")
    if answer.status != 200 or not session_id:
        raise RuntimeError(f"initialize at {url}: HTTP {answer.status}, no session id: {answer.body[:300]!r}")
    headers |= {"Mcp-Session-Id": session_id, "MCP-Protocol-Version": HANDSHAKE_VERSION}
    note = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}).encode()
    answer = request("POST", url, headers, note, cafile)
    if answer.status not in (200, 202):
        raise RuntimeError(f"notifications/initialized at {url}: HTTP {answer.status}: {answer.body[:300]!r}")
    return session_id
