"""Settings: secure defaults, weakening options named and refused off loopback, typos stop startup."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcp_bastion.errors import ConfigError
from mcp_bastion.settings import load_settings, parse_settings

UP = {"upstreams": {"up": {"url": "https://up.example/mcp"}}}


def test_defaults_are_secure() -> None:
    settings = parse_settings(UP)
    assert settings.server.allow_insecure_http is False
    assert settings.server.dangerously_allow_unauthenticated is False
    assert settings.server.base_url.startswith("https://")
    assert settings.tls.minimum_version == "1.2"
    assert settings.warnings() == []


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        pytest.param({"server": {"prot": 1}}, "server.prot", id="typo-names-the-path"),
        pytest.param({"upstreams": {}}, "at least one upstream", id="no-upstream"),
        pytest.param({"upstreams": {"Bad Name": {"url": "https://x"}}}, "upstreams", id="bad-endpoint-name"),
        pytest.param({"upstreams": {"up": {"url": "http://up.example/mcp"}}}, "allow_insecure_http", id="plain-http"),
        pytest.param(
            {"upstreams": {"up": {"url": "http://10.0.0.1/mcp", "allow_insecure_http": True}}},
            "only on loopback",
            id="plain-http-off-loopback",
        ),
        pytest.param({"upstreams": {"up": {"url": "ftp://x/"}}}, "https URL", id="scheme"),
        pytest.param({"upstreams": {"up": {}}}, "exactly one of url or command", id="neither"),
        pytest.param({"upstreams": {"up": {"url": "https://x", "command": ["a"]}}}, "exactly one", id="both"),
        pytest.param({"server": {"host": "0.0.0.0", "allow_insecure_http": True}}, "loopback", id="http-public"),
        pytest.param(
            {"server": {"host": "0.0.0.0", "dangerously_allow_unauthenticated": True}}, "loopback", id="open-public"
        ),
        pytest.param({"tls": {"cert": "a.pem"}}, "together", id="cert-without-key"),
        pytest.param({"limits": {"max_json_depth": 100000}}, "max_json_depth", id="limit-bound"),
        pytest.param(
            {"auth": {"issuers": [{"issuer": "https://i", "jwks_url": "https://i/j", "algorithms": ["HS256"]}]}},
            "algorithms",
            id="hs256-refused",
        ),
    ],
)
def test_refused(data: dict[str, object], fragment: str) -> None:
    merged = {**UP, **data}
    with pytest.raises(ConfigError) as info:
        parse_settings(merged)
    assert fragment in info.value.detail


def test_weakening_options_are_reported() -> None:
    settings = parse_settings(
        {
            "server": {"allow_insecure_http": True, "dangerously_allow_unauthenticated": True},
            "upstreams": {"up": {"url": "http://127.0.0.1:9/mcp", "allow_insecure_http": True, "allow_methods": ["x"]}},
        }
    )
    joined = "\n".join(settings.warnings())
    for name in ("server.allow_insecure_http", "dangerously_allow_unauthenticated", "upstreams.up.allow_insecure_http"):
        assert name in joined
    assert settings.server.base_url.startswith("http://")


def test_file_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "bastion.toml"
    path.write_text('[server]\nport = 9000\n[upstreams.up]\nurl = "https://up.example/mcp"\n')
    settings = load_settings(path, {"MCP_BASTION_SERVER__PORT": "9443", "MCP_BASTION_LIMITS__MAX_JSON_DEPTH": "32"})
    assert settings.server.port == 9443
    assert settings.limits.max_json_depth == 32
    assert settings.upstreams["up"].url == "https://up.example/mcp"


def test_unreadable_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_settings(tmp_path / "missing.toml", {})
    broken = tmp_path / "broken.toml"
    broken.write_text("[server\n")
    with pytest.raises(ConfigError):
        load_settings(broken, {})


def test_settings_are_frozen() -> None:
    settings = parse_settings(UP)
    with pytest.raises(ValueError, match="frozen"):
        settings.server.port = 1  # type: ignore[misc]


def test_weakened_content_defences_are_reported() -> None:
    sinks = {
        "url": {"kind": "url", "allow_private": True, "allowed_networks": ["169.254.169.254/32"]},
        "path": {"kind": "path", "roots": ["/srv"], "resolve_symlinks": False},
        "command": {"kind": "none"},
        "safe": {"kind": "path", "roots": ["/srv"]},
    }
    settings = parse_settings(
        {
            "upstreams": {"up": {"url": "https://up.example/mcp", "tools": {"fetch": {"sinks": sinks}}}},
            "integrity": {"scan_definitions": False},
        }
    )
    joined = "\n".join(settings.warnings())
    assert "sinks.url: allow_private, allowed_networks" in joined
    assert "sinks.path: resolve_symlinks = false" in joined
    assert "sinks.command: kind = none" in joined
    assert "sinks.safe" not in joined
    assert "integrity.scan_definitions = false" in joined
