"""``[upstreams.X.sandbox]``: strict by default, the short string form, and what the model refuses."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from mcp_bastion.sandbox.profile import SandboxSettings
from mcp_bastion.settings import parse_settings


def settings_with(sandbox: object | None) -> object:
    upstream: dict[str, object] = {"command": [sys.executable, "server.py"]}
    if sandbox is not None:
        upstream["sandbox"] = sandbox
    return parse_settings({"upstreams": {"local": upstream}})


def test_strict_is_the_default() -> None:
    profile = SandboxSettings()
    assert profile.strict
    assert (profile.network, profile.memory_mb, profile.cpu_seconds, profile.processes) == ("none", 512, 60, 64)
    assert (profile.open_files, profile.file_size_mb) == (256, 64)


def test_the_short_form_and_the_warning_at_every_start() -> None:
    settings = settings_with("dangerously_disabled")
    assert not settings.upstreams["local"].sandbox.strict  # type: ignore[attr-defined]
    assert any("dangerously_disabled" in w for w in settings.warnings())  # type: ignore[attr-defined]
    assert not any("sandbox" in w for w in settings_with(None).warnings())  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "table",
    [
        pytest.param({"mode": "off"}, id="unknown-mode"),
        pytest.param({"read_only": ["relative/path"]}, id="relative-read-only"),
        pytest.param({"egress": ["example.com:443"]}, id="egress-without-proxy"),
        pytest.param({"network": "proxy"}, id="proxy-without-egress"),
        pytest.param({"network": "proxy", "egress": ["example.com"]}, id="egress-without-port"),
        pytest.param({"network": "proxy", "egress": ["example.com:99999"]}, id="egress-bad-port"),
        pytest.param({"egress_allowed_networks": ["10.0.0.0/8"]}, id="allowed-networks-without-proxy"),
        pytest.param(
            {"network": "proxy", "egress": ["api.internal:443"], "egress_allowed_networks": ["10.0.0.0/33"]},
            id="allowed-networks-bad-cidr",
        ),
        pytest.param({"memory_mb": 0}, id="no-memory"),
        pytest.param({"call_timeout_seconds": 0}, id="no-time"),
        pytest.param({"typo": 1}, id="unknown-option"),
    ],
)
def test_bad_profiles_are_refused(table: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        SandboxSettings.model_validate(table)


def test_a_relative_data_dir_lives_under_the_state_dir(tmp_path: Path) -> None:
    assert SandboxSettings(data_dir=Path("files")).resolved_data_dir(tmp_path) == tmp_path / "sandbox" / "files"
    assert SandboxSettings(data_dir=Path("/srv/x")).resolved_data_dir(tmp_path) == Path("/srv/x")
    assert SandboxSettings().resolved_data_dir(tmp_path) is None


def test_private_egress_networks_are_a_named_weakening() -> None:
    table = {"network": "proxy", "egress": ["api.internal:443"], "egress_allowed_networks": ["10.1.0.0/16"]}
    warnings = settings_with(table).warnings()  # type: ignore[attr-defined]
    assert any("egress_allowed_networks" in w and "10.1.0.0/16" in w for w in warnings)
    plain = {"network": "proxy", "egress": ["api.example:443"]}
    assert not any("egress_allowed_networks" in w for w in settings_with(plain).warnings())  # type: ignore[attr-defined]
