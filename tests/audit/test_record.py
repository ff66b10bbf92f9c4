"""Audit records (``audit/record.py``): every kind of record carries the common fields, so one query on
``time``, ``decision``, ``reason`` or ``server`` covers tool calls, refused connections and egress alike."""

from __future__ import annotations

import re

import orjson
import pytest

from mcp_bastion.audit.record import MAX_DETAIL, build_record, connection_record, egress_record
from mcp_bastion.exchange import Principal
from mcp_bastion.jsonrpc.message import JSONObject, parse_message
from tests.pipeline.test_stage import exchange

NOW = 1_767_225_600.25
"""2026-01-01T00:00:00.250Z."""
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00")


def tool_call() -> JSONObject:
    ex = exchange()
    ex.principal = Principal("alice", "https://issuer", "bearer")
    raw = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "echo", "arguments": {}}}
    ex.message = parse_message(orjson.dumps(raw), max_depth=16)
    ex.answered = True
    return build_record(ex, status=200, now=NOW)


def egress(**fields: object) -> JSONObject:
    arguments: dict[str, object] = {
        "request_id": "e1",
        "method": "CONNECT",
        "host": "api.example.com",
        "port": 443,
        "address": "93.184.215.14",
        "decision": "allow",
        "reason": "ok",
        "status": 200,
        "end": "closed",
        "bytes_up": 10,
        "bytes_down": 20,
        "latency_ms": 1.23456,
        "now": NOW,
    } | fields
    return egress_record("up", **arguments)  # type: ignore[arg-type]


def test_an_egress_record_has_the_common_fields_of_a_tool_call_record() -> None:
    call, out = tool_call(), egress()
    assert call["method"] == "tools/call"  # the fixture really is a tool call
    assert set(call) <= set(out)
    assert list(out)[: len(call)] == list(call)  # same names, same order: a SIEM sees one shape
    assert set(connection_record("head_timeout", "10.0.0.1:5", request_id="c1", now=NOW)) <= set(out)
    for record in (call, out):
        assert isinstance(record["time"], str)
        assert TIME.fullmatch(record["time"]), record["time"]
        assert record["decision"] == "allow"
        assert record["reason"] == "ok"
        assert record["server"] == "up"
    assert out["time"] == call["time"] == "2026-01-01T00:00:00.250+00:00"


def test_an_egress_record_keeps_what_the_proxy_saw() -> None:
    assert egress() == {
        "time": "2026-01-01T00:00:00.250+00:00",
        "request_id": "e1",
        "principal": None,
        "issuer": None,
        "client": None,
        "auth": None,
        "server": "up",
        "method": "CONNECT",
        "target": "api.example.com:443",
        "jsonrpc_id": None,
        "decision": "allow",
        "reason": "ok",
        "status": 200,
        "error_code": None,
        "latency_ms": 1.235,
        "remote": None,
        "kind": "egress",
        "host": "api.example.com",
        "port": 443,
        "address": "93.184.215.14",
        "end": "closed",
        "bytes_up": 10,
        "bytes_down": 20,
    }


@pytest.mark.parametrize(
    ("fields", "target"),
    [
        pytest.param({"method": None, "host": None, "port": None}, None, id="nothing-read"),
        pytest.param({"method": "GET", "host": "2001:db8::1", "port": 80}, "[2001:db8::1]:80", id="ipv6"),
        pytest.param({"host": "[::1%eth0]", "port": 80}, "[::1%eth0]:80", id="as-sent"),
    ],
)
def test_an_egress_record_says_what_it_is_and_where_it_went(fields: dict[str, object], target: str | None) -> None:
    record = egress(**fields)
    assert (record["kind"], record["method"], record["target"]) == ("egress", fields.get("method", "CONNECT"), target)


def test_an_egress_refusal_detail_is_bounded_and_absent_when_empty() -> None:
    refused = egress(decision="deny", reason="address_private", status=403, detail="x" * 2000)
    assert refused["detail"] == "x" * MAX_DETAIL
    assert "detail" not in egress()
