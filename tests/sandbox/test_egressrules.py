"""The allow-list and the limits (``sandbox/egressrules.py``), pure: entries parsed, names and literals
matched, authorities split; no proxy, no socket."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from mcp_bastion.errors import ConfigError
from mcp_bastion.sandbox.egressrules import AllowList, normal_host, split_authority


@pytest.mark.parametrize(
    ("entry", "host", "port", "allowed"),
    [
        pytest.param("api.example.com:443", "api.example.com", 443, True, id="exact"),
        pytest.param("API.Example.COM.:443", "api.example.com", 443, True, id="case-and-dot"),
        pytest.param("api.example.com:443", "api.example.com", 80, False, id="other-port"),
        pytest.param("api.example.com:443", "x.api.example.com", 443, False, id="exact-is-not-suffix"),
        pytest.param("*.example.com:443", "a.b.example.com", 443, True, id="wildcard-any-depth"),
        pytest.param("*.example.com:443", "example.com", 443, False, id="wildcard-not-apex"),
        pytest.param("*.example.com:443", "evilexample.com", 443, False, id="wildcard-label-boundary"),
        pytest.param("93.184.215.14:443", ipaddress.ip_address("93.184.215.14"), 443, True, id="ipv4-literal"),
        pytest.param("[2001:DB8:0::1]:443", ipaddress.ip_address("2001:db8::1"), 443, True, id="ipv6-literal"),
        pytest.param("93.184.215.14:443", "93.184.215.14", 443, False, id="literal-is-not-a-name"),
        pytest.param(
            "127.0.0.1:80", ipaddress.ip_address("::ffff:127.0.0.1"), 80, False, id="mapped-is-not-the-literal"
        ),
    ],
)
def test_allow_list_matches(entry: str, host: Any, port: int, allowed: bool) -> None:
    assert AllowList.parse([entry]).allows(host, port) is allowed


@pytest.mark.parametrize(
    "entry",
    [
        "example.com",
        "example.com:0",
        "example.com:65536",
        "*:443",
        "*.127.0.0.1:80",
        "http://example.com:80",
        "user@example.com:443",
        "exa mple.com:443",
        "2130706433:80",
        "127.1:80",
        "[::1%eth0]:80",
        "[::1:80",
        "",
    ],
)
def test_allow_list_refuses_malformed_entries(entry: str) -> None:
    with pytest.raises(ConfigError):
        AllowList.parse([entry])


@pytest.mark.parametrize(
    ("text", "default_port", "expected"),
    [
        pytest.param("example.com:443", None, ("example.com", 443), id="name-port"),
        pytest.param("example.com", 80, ("example.com", 80), id="default-port"),
        pytest.param("example.com", None, None, id="port-missing"),
        pytest.param("[2001:db8::1]:443", None, ("[2001:db8::1]", 443), id="ipv6-brackets-kept"),
        pytest.param("example.com:65535", None, ("example.com", 65535), id="highest-port"),
        pytest.param("example.com:0", 80, None, id="port-zero"),
        pytest.param("example.com:", 80, None, id="empty-port"),
        pytest.param("user@example.com:443", None, None, id="userinfo"),
        pytest.param("example.com/path", 80, None, id="path"),
    ],
)
def test_split_authority(text: str, default_port: int | None, expected: tuple[str, int] | None) -> None:
    assert split_authority(text, default_port=default_port) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("Example.COM.", "example.com", id="case-and-dot"),
        pytest.param("[2001:DB8::1]", ipaddress.ip_address("2001:db8::1"), id="ipv6"),
        pytest.param("127.1", None, id="noncanonical-literal"),
        pytest.param("exa mple.com", None, id="malformed"),
    ],
)
def test_normal_host(text: str, expected: object) -> None:
    assert normal_host(text) == expected
