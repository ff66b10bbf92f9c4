"""RFC 6750 §2.1 credentials parsing and §3 challenges (mcp_bastion.oauth.bearer)."""

from __future__ import annotations

import pytest

from mcp_bastion.errors import Unauthenticated
from mcp_bastion.oauth.bearer import parse_authorization, www_authenticate

METADATA = "https://gw.example/.well-known/oauth-protected-resource/mcp"


@pytest.mark.parametrize(
    ("header", "token"),
    [
        pytest.param("Bearer abc.def.ghi", "abc.def.ghi", id="jwt"),
        pytest.param("bearer abc", "abc", id="lowercase-scheme"),
        pytest.param("BEARER abc", "abc", id="uppercase-scheme"),
        pytest.param("Bearer   abc", "abc", id="several-spaces"),
        pytest.param("  Bearer abc  ", "abc", id="surrounding-whitespace"),
        pytest.param("Bearer a-._~+/Z9==", "a-._~+/Z9==", id="all-b64token-characters"),
    ],
)
def test_parse_accepts(header: str, token: str) -> None:
    assert parse_authorization(header) == token


@pytest.mark.parametrize(
    ("header", "reason", "error"),
    [
        pytest.param(None, "token_missing", "", id="absent"),
        pytest.param("", "token_missing", "", id="empty"),
        pytest.param("   ", "token_missing", "", id="blank"),
        pytest.param("Basic dXNlcjpwYXNz", "token_malformed", "invalid_request", id="basic-scheme"),
        pytest.param("Bearer", "token_malformed", "invalid_request", id="scheme-only"),
        pytest.param("Bearer ", "token_malformed", "invalid_request", id="scheme-and-space"),
        pytest.param("Bearerabc", "token_malformed", "invalid_request", id="no-space"),
        pytest.param("Bearer\tabc", "token_malformed", "invalid_request", id="tab-separator"),
        pytest.param("Bearer abc def", "token_malformed", "invalid_request", id="two-tokens"),
        pytest.param("Bearer abc, Bearer def", "token_malformed", "invalid_request", id="two-credentials"),
        pytest.param("Bearer abc,def", "token_malformed", "invalid_request", id="comma"),
        pytest.param('Bearer "abc"', "token_malformed", "invalid_request", id="quoted"),
        pytest.param("Bearer a=b", "token_malformed", "invalid_request", id="padding-inside"),
        pytest.param("Bearer =abc", "token_malformed", "invalid_request", id="padding-only-start"),
        pytest.param("Bearer abc\r\nX: y", "token_malformed", "invalid_request", id="header-injection"),
        pytest.param("Bearer ab\x00c", "token_malformed", "invalid_request", id="nul"),
        pytest.param("Bearer abcé", "token_malformed", "invalid_request", id="non-ascii"),
        pytest.param("DPoP abc", "token_malformed", "invalid_request", id="dpop-scheme"),
    ],
)
def test_parse_rejects(header: str | None, reason: str, error: str) -> None:
    with pytest.raises(Unauthenticated) as caught:
        parse_authorization(header)
    assert caught.value.reason == reason
    assert caught.value.error == error


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param({}, f'Bearer resource_metadata="{METADATA}"', id="no-credential"),
        pytest.param(
            {"error": "invalid_token"},
            f'Bearer resource_metadata="{METADATA}", error="invalid_token"',
            id="invalid-token",
        ),
        pytest.param(
            {"error": "insufficient_scope", "error_description": "need more", "scope": "tools:call files:read"},
            f'Bearer resource_metadata="{METADATA}", error="insufficient_scope", '
            'error_description="need more", scope="tools:call files:read"',
            id="insufficient-scope",
        ),
        pytest.param(
            {"error": "invalid_token", "error_description": 'x", error="ok'},
            f'Bearer resource_metadata="{METADATA}", error="invalid_token", error_description="x, error=ok"',
            id="quote-in-description-removed",
        ),
        pytest.param(
            {"error_description": "a\\b\r\nSet-Cookie: x=1\x00\x7fé"},
            f'Bearer resource_metadata="{METADATA}", error_description="abSet-Cookie: x=1"',
            id="backslash-controls-non-ascii-removed",
        ),
        pytest.param(
            {"error": '"\r\n'},
            f'Bearer resource_metadata="{METADATA}"',
            id="nothing-left-means-omitted",
        ),
        pytest.param(
            {"scope": 'read" evil="1'},
            f'Bearer resource_metadata="{METADATA}", scope="read evil=1"',
            id="quote-in-scope-removed",
        ),
    ],
)
def test_www_authenticate(kwargs: dict[str, str], expected: str) -> None:
    assert www_authenticate(resource_metadata_url=METADATA, **kwargs) == expected


@pytest.mark.parametrize(
    ("url", "quoted"),
    [
        pytest.param('https://gw.example/a"b', "https://gw.example/a%22b", id="quote"),
        pytest.param("https://gw.example/a\\b", "https://gw.example/a%5Cb", id="backslash"),
        pytest.param("https://gw.example/a\r\nb", "https://gw.example/a%0D%0Ab", id="crlf"),
        pytest.param("https://gw.example/é", "https://gw.example/%C3%A9", id="non-ascii"),
        pytest.param("https://gw.example:8443/p?q=1&r=%20", "https://gw.example:8443/p?q=1&r=%20", id="kept"),
    ],
)
def test_www_authenticate_quotes_url(url: str, quoted: str) -> None:
    assert www_authenticate(resource_metadata_url=url) == f'Bearer resource_metadata="{quoted}"'


def test_long_description_is_cut() -> None:
    value = www_authenticate(resource_metadata_url=METADATA, error_description="\x01z" * 1000)
    assert value.count("z") == 200
