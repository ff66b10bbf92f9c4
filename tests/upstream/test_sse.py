"""The SSE parser against the WHATWG framing rules, fed in every possible split, and its size bound."""

from __future__ import annotations

import pytest

from mcp_bastion.errors import UpstreamError
from mcp_bastion.upstream.sse import SSEEvent, SSEParser, encode_event

STREAM = (
    b": comment\r\n"
    b"id: 7\r\nretry: 100\r\ndata:\r\n\r\n"
    b'event: message\ndata: {"a":1}\n\n'
    b"data: line1\rdata: line2\r\r"
    b"event: other\ndata: x\n\n"
)
EXPECTED = [
    SSEEvent(b"", "message", "7", 100),
    SSEEvent(b'{"a":1}', "message", None, None),
    SSEEvent(b"line1\nline2", "message", None, None),
    SSEEvent(b"x", "other", None, None),
]


def test_whole_stream() -> None:
    assert SSEParser(1024).feed(STREAM) == EXPECTED


@pytest.mark.parametrize("split", range(1, len(STREAM)))
def test_any_split_gives_the_same_events(split: int) -> None:
    parser = SSEParser(1024)
    assert parser.feed(STREAM[:split]) + parser.feed(STREAM[split:]) == EXPECTED


def test_byte_by_byte() -> None:
    parser = SSEParser(1024)
    events = [event for i in range(len(STREAM)) for event in parser.feed(STREAM[i : i + 1])]
    assert events == EXPECTED


@pytest.mark.parametrize(
    "chunks",
    [
        pytest.param([b"data: " + b"x" * 2000 + b"\n\n"], id="one-big-line"),
        pytest.param([b"data: xx\n"] * 500, id="many-lines"),
    ],
)
def test_event_size_is_bounded(chunks: list[bytes]) -> None:
    parser = SSEParser(1024)
    with pytest.raises(UpstreamError) as info:
        for chunk in chunks:
            parser.feed(chunk)
    assert info.value.reason == "upstream_event_too_large"


def test_encode_round_trips() -> None:
    frame = encode_event(b'{"a":1}', event_id="e1", retry_ms=50)
    assert SSEParser(1024).feed(frame) == [SSEEvent(b'{"a":1}', "message", "e1", 50)]
    assert SSEParser(1024).feed(encode_event(b"", event_id="p")) == [SSEEvent(b"", "message", "p", None)]
