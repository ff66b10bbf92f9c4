"""RFC 6749 §3.3 scope strings."""

from __future__ import annotations

import pytest

from mcp_bastion.oauth import scopes
from mcp_bastion.oauth.refusal import Refusal


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(None, frozenset(), id="absent"),
        pytest.param("", frozenset(), id="empty"),
        pytest.param("a", frozenset({"a"}), id="one"),
        pytest.param("b a b", frozenset({"a", "b"}), id="duplicates"),
        pytest.param("a  b", frozenset({"a", "b"}), id="double-space"),
        pytest.param("mcp:tools/read", frozenset({"mcp:tools/read"}), id="punctuation"),
    ],
)
def test_parse(value: str | None, expected: frozenset[str]) -> None:
    assert scopes.parse(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param('a"b', id="quote"),
        pytest.param("a\\b", id="backslash"),
        pytest.param("a\tb", id="tab"),
        pytest.param("é", id="non-ascii"),
        pytest.param("a" * 2001, id="too-long"),
    ],
)
def test_parse_refuses(value: str) -> None:
    with pytest.raises(Refusal) as caught:
        scopes.parse(value)
    assert (caught.value.error, caught.value.reason) == ("invalid_scope", "scope_malformed")


def test_render_is_canonical() -> None:
    assert scopes.render(["b", "a", "b"]) == "a b"
