"""Redirect URI rules (RFC 6749 §3.1.2, RFC 8252 §7, RFC 9700 §4.1): what may be registered, and exact
matching with only the loopback port free. Every manipulation from RFC 9700 §4.1.1 is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_bastion.oauth import redirects
from mcp_bastion.oauth.refusal import Refusal


@pytest.mark.parametrize(
    "uri",
    [
        pytest.param("https://app.example/cb", id="https"),
        pytest.param("https://app.example:8443/cb?x=1", id="https-port-query"),
        pytest.param("http://127.0.0.1/cb", id="loopback-v4"),
        pytest.param("http://127.0.0.1:3000/cb", id="loopback-v4-port"),
        pytest.param("http://[::1]:3000/cb", id="loopback-v6"),
        pytest.param("http://localhost:3000/cb", id="localhost"),
        pytest.param("com.example.app:/oauth2redirect", id="private-use-scheme"),
    ],
)
def test_registrable(uri: str) -> None:
    assert redirects.check_registrable(uri) == uri


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        pytest.param("", "redirect_uri_malformed", id="empty"),
        pytest.param("/cb", "redirect_uri_malformed", id="relative"),
        pytest.param("https://app.example/cb#", "redirect_uri_malformed", id="empty-fragment"),
        pytest.param("https://app.example/cb#x", "redirect_uri_malformed", id="fragment"),
        pytest.param("https://app.example/c b", "redirect_uri_malformed", id="space"),
        pytest.param("https://app.example/cb\n", "redirect_uri_malformed", id="newline"),
        pytest.param("https://app.example\\@evil.example/", "redirect_uri_malformed", id="backslash"),
        pytest.param("https://äpp.example/cb", "redirect_uri_malformed", id="non-ascii"),
        pytest.param("https:///cb", "redirect_uri_malformed", id="no-host"),
        pytest.param("https://app.example:0/cb", "redirect_uri_malformed", id="port-zero"),
        pytest.param("https://app.example:99999/cb", "redirect_uri_malformed", id="port-too-big"),
        pytest.param("https://user@app.example/cb", "redirect_uri_userinfo", id="userinfo"),
        pytest.param("https://app.example@evil.example/cb", "redirect_uri_userinfo", id="userinfo-host-confusion"),
        pytest.param("https://app.example/a/../cb", "redirect_uri_path_trick", id="dot-dot"),
        pytest.param("https://app.example/./cb", "redirect_uri_path_trick", id="dot"),
        pytest.param("https://app.example/a%2f..%2fcb", "redirect_uri_path_trick", id="encoded-slash"),
        pytest.param("https://app.example/a%5Ccb", "redirect_uri_path_trick", id="encoded-backslash"),
        pytest.param("https://app.example/%2e%2e/cb", "redirect_uri_path_trick", id="encoded-dots"),
        pytest.param("http://app.example/cb", "redirect_uri_insecure", id="http-not-loopback"),
        pytest.param("http://127.0.0.2/cb", "redirect_uri_insecure", id="http-other-127"),
        pytest.param("http://127.1/cb", "redirect_uri_insecure", id="http-short-loopback"),
        pytest.param("javascript:alert(1)", "redirect_uri_scheme", id="javascript"),
        pytest.param("data:text/html,x", "redirect_uri_scheme", id="data"),
        pytest.param("file:///etc/passwd", "redirect_uri_scheme", id="file"),
        pytest.param("myapp:/cb", "redirect_uri_scheme", id="private-scheme-not-reverse-domain"),
        pytest.param("com.example.app://evil.example/cb", "redirect_uri_malformed", id="private-scheme-authority"),
    ],
)
def test_not_registrable(uri: str, reason: str) -> None:
    with pytest.raises(Refusal) as caught:
        redirects.check_registrable(uri)
    assert (caught.value.error, caught.value.reason) == ("invalid_redirect_uri", reason)


REGISTERED = (
    "https://app.example/cb",
    "http://127.0.0.1/loop",
    "http://localhost:8080/local",
    "com.example.app:/oauth2redirect",
)


@pytest.mark.parametrize(
    "requested",
    [
        pytest.param("https://app.example/cb", id="exact"),
        pytest.param("http://127.0.0.1:51234/loop", id="loopback-any-port"),
        pytest.param("http://127.0.0.1/loop", id="loopback-no-port"),
        pytest.param("http://localhost:9999/local", id="localhost-other-port"),
        pytest.param("com.example.app:/oauth2redirect", id="private-use"),
    ],
)
def test_match(requested: str) -> None:
    assert redirects.match(requested, REGISTERED) == requested


@pytest.mark.parametrize(
    ("requested", "reason"),
    [
        # RFC 9700 §4.1.1: every way of stretching a registered URI to reach somewhere else.
        pytest.param("https://app.example/cb/evil", "redirect_uri_mismatch", id="path-suffix"),
        pytest.param("https://app.example/c", "redirect_uri_mismatch", id="path-prefix"),
        pytest.param("https://app.example/cb?x=1", "redirect_uri_mismatch", id="added-query"),
        pytest.param("https://app.example.evil.example/cb", "redirect_uri_mismatch", id="host-suffix"),
        pytest.param("https://evil.example/cb", "redirect_uri_mismatch", id="other-host"),
        pytest.param("https://APP.example/cb", "redirect_uri_mismatch", id="host-case"),
        pytest.param("https://app.example:443/cb", "redirect_uri_mismatch", id="explicit-default-port"),
        pytest.param("https://app.example:8443/cb", "redirect_uri_mismatch", id="other-port-not-loopback"),
        pytest.param("http://app.example/cb", "redirect_uri_insecure", id="other-scheme-http"),
        pytest.param("https://app.example/cb/../cb", "redirect_uri_path_trick", id="path-traversal"),
        pytest.param("https://app.example/cb%2f..%2fevil", "redirect_uri_path_trick", id="encoded-traversal"),
        pytest.param("https://app.example@evil.example/cb", "redirect_uri_userinfo", id="userinfo"),
        pytest.param("https://evil.example@app.example/cb", "redirect_uri_userinfo", id="userinfo-same-host"),
        pytest.param("https://app.example/cb#frag", "redirect_uri_malformed", id="fragment"),
        pytest.param("https://127.0.0.1:5000/loop", "redirect_uri_mismatch", id="loopback-https-not-registered"),
        pytest.param("http://127.0.0.1:5000/loop/x", "redirect_uri_mismatch", id="loopback-other-path"),
        pytest.param("http://127.0.0.1:5000/loop?x", "redirect_uri_mismatch", id="loopback-added-query"),
        pytest.param("http://localhost:5000/loop", "redirect_uri_mismatch", id="loopback-other-host-spelling"),
        pytest.param("http://[::1]:5000/loop", "redirect_uri_mismatch", id="loopback-v6-for-v4"),
        pytest.param("com.example.app:/oauth2redirect/x", "redirect_uri_mismatch", id="private-use-suffix"),
        pytest.param("com.example.evil:/oauth2redirect", "redirect_uri_mismatch", id="private-use-other-scheme"),
    ],
)
def test_no_match(requested: str, reason: str) -> None:
    with pytest.raises(Refusal) as caught:
        redirects.match(requested, REGISTERED)
    assert caught.value.error == "invalid_request"
    assert caught.value.reason == reason
    assert caught.value.redirect_uri is None  # never sent back to an unverified URI


@pytest.mark.parametrize(
    ("uri", "host"),
    [
        pytest.param("https://app.example:8443/cb", "app.example:8443", id="https"),
        pytest.param("http://127.0.0.1:5000/cb", "127.0.0.1:5000", id="loopback"),
        pytest.param("com.example.app:/cb", "com.example.app:", id="private-use"),
    ],
)
def test_redirect_host(uri: str, host: str) -> None:
    assert redirects.redirect_host(uri) == host


@given(position=st.integers(min_value=0, max_value=len(REGISTERED[0])), extra=st.characters(codec="ascii"))
def test_any_one_character_insertion_is_refused(position: int, extra: str) -> None:
    """Exact matching: no single inserted character turns into an accepted variant of an https URI."""
    mutated = REGISTERED[0][:position] + extra + REGISTERED[0][position:]
    with pytest.raises(Refusal):
        redirects.match(mutated, REGISTERED[:1])


@given(position=st.integers(min_value=0, max_value=len(REGISTERED[0]) - 1))
def test_any_one_character_deletion_is_refused(position: int) -> None:
    mutated = REGISTERED[0][:position] + REGISTERED[0][position + 1 :]
    with pytest.raises(Refusal):
        redirects.match(mutated, REGISTERED[:1])
