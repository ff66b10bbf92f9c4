"""JSON-RPC 2.0 parsing: the specification's own examples (§7) and the refusals, each with its reason."""

from __future__ import annotations

import contextlib

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_bastion.errors import MalformedRequest, ParseFailed
from mcp_bastion.jsonrpc.message import check_depth, error_response, parse_body, parse_message


@pytest.mark.parametrize(
    ("body", "kinds"),
    [
        pytest.param(b'{"jsonrpc":"2.0","method":"subtract","params":{"minuend":42},"id":3}', ["request"], id="named"),
        pytest.param(b'{"jsonrpc":"2.0","method":"update","params":{"a":1}}', ["notification"], id="notification"),
        pytest.param(b'{"jsonrpc":"2.0","result":19,"id":1}', ["response"], id="result"),
        pytest.param(b'{"jsonrpc":"2.0","error":{"code":-32601,"message":"nf"},"id":"1"}', ["response"], id="error"),
        pytest.param(
            b'[{"jsonrpc":"2.0","method":"a","id":"1"},{"jsonrpc":"2.0","method":"n"}]',
            ["request", "notification"],
            id="batch",
        ),
    ],
)
def test_valid_messages(body: bytes, kinds: list[str]) -> None:
    parsed = parse_body(body, max_depth=16)
    assert [m.kind for m in parsed.messages] == kinds
    assert parsed.data == body
    assert parsed.batch == body.startswith(b"[")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param(b'{"jsonrpc":"2.0","method":"foobar,"params":"bar","baz]', "parse_error", id="spec-invalid-json"),
        pytest.param(b'{"jsonrpc":"2.0","method":1,"params":"bar"}', "bad_method", id="spec-invalid-method"),
        pytest.param(b"[]", "empty_batch", id="spec-empty-array"),
        pytest.param(b"[1]", "not_an_object", id="spec-batch-of-number"),
        pytest.param(b'{"method":"x","id":1}', "bad_jsonrpc_version", id="no-version"),
        pytest.param(b'{"jsonrpc":"2.0","method":"x","params":[1,2],"id":1}', "bad_params", id="positional-params"),
        pytest.param(b'{"jsonrpc":"2.0","method":"x","id":null}', "bad_id", id="null-id"),
        pytest.param(b'{"jsonrpc":"2.0","method":"x","id":true}', "bad_id", id="bool-id"),
        pytest.param(b'{"jsonrpc":"2.0","method":"x","id":1.5}', "bad_id", id="float-id"),
        pytest.param(b'{"jsonrpc":"2.0","method":"","id":1}', "bad_method", id="empty-method"),
        pytest.param(
            b'{"jsonrpc":"2.0","method":"x","result":1,"id":1}', "ambiguous_message", id="request-with-result"
        ),
        pytest.param(b'{"jsonrpc":"2.0","result":1,"error":{"code":1,"message":""},"id":1}', "bad_response", id="both"),
        pytest.param(b'{"jsonrpc":"2.0","result":1}', "bad_message", id="response-without-id"),
        pytest.param(b'{"jsonrpc":"2.0","error":{"code":"x","message":"m"},"id":1}', "bad_error_object", id="bad-code"),
        pytest.param(b'"just a string"', "not_an_object", id="string"),
        pytest.param(b"\xff\xfe", "parse_error", id="not-utf8"),
    ],
)
def test_refusals(body: bytes, reason: str) -> None:
    with pytest.raises(MalformedRequest) as info:
        parse_body(body, max_depth=16)
    assert info.value.reason == reason
    assert isinstance(info.value, ParseFailed) == (reason == "parse_error")


def test_depth_limit_counts_containers() -> None:
    check_depth({"a": [{"b": 1}]}, 3)
    with pytest.raises(MalformedRequest) as info:
        check_depth({"a": [{"b": {}}]}, 3)
    assert info.value.reason == "json_too_deep"


def test_depth_check_survives_hostile_nesting() -> None:
    """Iterative: 100,000 levels must neither recurse nor pass."""
    deep: object = 1
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(MalformedRequest):
        check_depth(deep, 64)


def test_parse_message_refuses_batches() -> None:
    with pytest.raises(MalformedRequest):
        parse_message(b'[{"jsonrpc":"2.0","method":"x"}]', max_depth=8)


def test_error_response_shape() -> None:
    assert orjson.loads(error_response(None, -32600, "bad", {"reason": "r"})) == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32600, "message": "bad", "data": {"reason": "r"}},
    }


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    with contextlib.suppress(MalformedRequest):
        parse_body(data, max_depth=8)
