"""Server-Sent Events framing (WHATWG HTML §9.2), sans-IO: a bounded incremental parser and an encoder.

The parser is fed raw bytes as they arrive and yields complete events. It enforces a maximum event size so
an upstream cannot make the gateway buffer without bound (an event larger than the limit raises).
"""

from __future__ import annotations

from dataclasses import dataclass

from mcp_bastion.errors import UpstreamError


@dataclass(frozen=True, slots=True)
class SSEEvent:
    data: bytes
    event: str = "message"
    event_id: str | None = None
    retry_ms: int | None = None


class SSEParser:
    """Incremental SSE parser. ``feed`` returns the events completed by the new bytes."""

    def __init__(self, max_event_bytes: int) -> None:
        self._max = max_event_bytes
        self._buffer = b""
        self._data: list[bytes] = []
        self._size = 0
        self._event = ""
        self._id: str | None = None
        self._retry: int | None = None
        self._seen_field = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        self._buffer += chunk
        events: list[SSEEvent] = []
        while True:
            line, sep, rest = _split_line(self._buffer)
            if not sep:
                if len(self._buffer) > self._max:
                    raise UpstreamError("SSE line larger than the event limit", reason="upstream_event_too_large")
                return events
            self._buffer = rest
            event = self._line(line)
            if event is not None:
                events.append(event)

    def _line(self, line: bytes) -> SSEEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(b":"):
            return None
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        self._seen_field = True
        if name == b"data":
            self._size += len(value) + 1
            if self._size > self._max:
                raise UpstreamError("SSE event larger than the limit", reason="upstream_event_too_large")
            self._data.append(value)
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id":
            if b"\x00" not in value:
                self._id = value.decode("utf-8", "replace")
        elif name == b"retry" and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> SSEEvent | None:
        if not self._seen_field:
            return None
        event = SSEEvent(b"\n".join(self._data), self._event or "message", self._id, self._retry)
        self._data, self._size, self._event, self._retry, self._seen_field = [], 0, "", None, False
        # The last event id persists across events by spec; we report it only on the event that set it.
        self._id = None
        return event


def _split_line(buffer: bytes) -> tuple[bytes, bool, bytes]:
    """Split at the first CRLF, LF or CR (a CR at the very end may be half of a CRLF: wait for more)."""
    lf = buffer.find(b"\n")
    cr = buffer.find(b"\r")
    if cr == -1 and lf == -1:
        return buffer, False, b""
    if cr != -1 and (lf == -1 or cr < lf):
        if cr + 1 == len(buffer):
            return buffer, False, b""
        end = cr + 2 if buffer[cr + 1 : cr + 2] == b"\n" else cr + 1
        return buffer[:cr], True, buffer[end:]
    return buffer[:lf], True, buffer[lf + 1 :]


def encode_event(data: bytes, *, event_id: str | None = None, retry_ms: int | None = None) -> bytes:
    """One SSE event carrying ``data`` (a JSON message is a single line; multi-line data is split)."""
    parts: list[bytes] = []
    if event_id is not None:
        parts.append(b"id: " + event_id.encode())
    if retry_ms is not None:
        parts.append(b"retry: %d" % retry_ms)
    if data:
        parts.append(b"event: message")
        parts.extend(b"data: " + line for line in data.split(b"\n"))
    else:
        parts.append(b"data: ")
    return b"\n".join(parts) + b"\n\n"
