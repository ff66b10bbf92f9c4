"""``[upstreams.X.sandbox]``: strict by default, the short string form, named profiles and what is refused."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from mcp_bastion.errors import ConfigError
from mcp_bastion.sandbox.profile import SandboxSection, SandboxSettings
from mcp_bastion.settings import Settings, load_settings, parse_settings


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
        pytest.param({"socket_families": ["packet"]}, id="unknown-socket-family"),
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


WEB: dict[str, object] = {"network": "proxy", "egress": ["api.github.com:443"], "memory_mb": 1024}


def with_profiles(sandbox: object, **profiles: object) -> Settings:
    """Settings whose one stdio upstream ``local`` has ``sandbox``, with ``profiles`` under [sandbox.profiles]."""
    return parse_settings(
        {"sandbox": {"profiles": profiles}, "upstreams": {"local": {"command": [sys.executable], "sandbox": sandbox}}}
    )


def refusal(sandbox: object, **profiles: object) -> str:
    with pytest.raises(ConfigError) as caught:
        with_profiles(sandbox, **profiles)
    return caught.value.detail


def test_an_upstream_selects_a_named_profile_by_name() -> None:
    profile = with_profiles("web", web=WEB).upstreams["local"].sandbox
    assert profile == SandboxSettings(network="proxy", egress=("api.github.com:443",), memory_mb=1024)
    assert profile.strict
    assert (profile.cpu_seconds, profile.processes, profile.data_dir) == (60, 64, None)  # strict's defaults


def test_overrides_replace_fields_of_the_named_profile() -> None:
    override = {"profile": "web", "memory_mb": 2048, "egress": ["api.gitlab.com:443"], "data_dir": "web"}
    profile = with_profiles(override, web=WEB).upstreams["local"].sandbox
    assert (profile.network, profile.memory_mb, profile.data_dir) == ("proxy", 2048, Path("web"))
    assert profile.egress == ("api.gitlab.com:443",)  # the whole list, not appended to the profile's
    assert with_profiles({"profile": "web"}, web=WEB).upstreams["local"].sandbox.memory_mb == 1024


def test_built_in_names_select_what_they_always_did() -> None:
    assert with_profiles("strict").upstreams["local"].sandbox == SandboxSettings()
    assert with_profiles({"profile": "strict", "memory_mb": 64}).upstreams["local"].sandbox.memory_mb == 64
    for unconfined in ("dangerously_disabled", {"profile": "dangerously_disabled"}, {"mode": "dangerously_disabled"}):
        settings = with_profiles(unconfined, web=WEB)
        assert not settings.upstreams["local"].sandbox.strict
        assert any('upstreams.local.sandbox = "dangerously_disabled"' in w for w in settings.warnings())


def test_a_table_without_profile_is_a_profile_of_its_own() -> None:
    # Named profiles exist, but a table with mode and fields does not inherit from any of them.
    table = {"mode": "strict", "memory_mb": 256, "read_only": ["/srv"]}
    profile = with_profiles(table, web=WEB).upstreams["local"].sandbox
    assert profile == SandboxSettings(memory_mb=256, read_only=(Path("/srv"),))


@pytest.mark.parametrize("sandbox", ["webb", {"profile": "webb", "memory_mb": 1024}, "off"])
def test_an_unknown_profile_names_the_known_ones(sandbox: object) -> None:
    detail = refusal(sandbox, web=WEB)
    assert "upstreams.local.sandbox: Value error, no sandbox profile" in detail
    assert "known: strict, dangerously_disabled, web" in detail


def test_an_unknown_profile_hides_no_other_mistake() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings(
            {
                "server": {"port": -1},
                "upstreams": {
                    "one": {"command": ["a"], "sandbox": "nope"},
                    "two": {"command": ["b"], "sandbox": {"memory_mb": 0}},
                },
            }
        )
    detail = caught.value.detail
    assert "server.port" in detail
    assert "upstreams.one.sandbox: Value error, no sandbox profile 'nope'" in detail
    assert "upstreams.two.sandbox.memory_mb" in detail


@pytest.mark.parametrize("name", ["strict", "dangerously_disabled"])
def test_a_built_in_profile_cannot_be_redefined(name: str) -> None:
    # Even an invalid table: the name is the one mistake worth reporting.
    for table in ({"memory_mb": 2048}, {"memory_mb": 0}):
        detail = refusal("strict", **{name: table})
        assert f"sandbox.profiles.{name}: {name!r} is a built-in profile" in detail


def test_a_named_profile_cannot_be_unconfined() -> None:
    detail = refusal("relaxed", relaxed={"mode": "dangerously_disabled"})
    assert "a named profile is always strict" in detail


def test_a_named_profile_is_a_table() -> None:
    detail = refusal("alias", alias="strict")
    assert "sandbox.profiles.alias must be a table" in detail
    assert "upstreams.local.sandbox: Value error, the sandbox profile 'alias' is not valid" in detail


def test_profile_and_mode_together_are_refused() -> None:
    assert "give profile or mode, not both" in refusal({"profile": "web", "mode": "strict"}, web=WEB)


def test_profile_must_be_a_name() -> None:
    assert "upstreams.local.sandbox: Value error, profile must be a profile name" in refusal({"profile": 3})


@pytest.mark.parametrize(
    ("profile", "override", "problem"),
    [
        pytest.param({"memory_mb": 1024}, {"network": "proxy"}, 'network = "proxy" needs egress', id="proxy-no-egress"),
        pytest.param(WEB, {"network": "none"}, 'egress needs network = "proxy"', id="egress-without-proxy"),
        pytest.param({}, {"egress": ["example.com:443"]}, 'egress needs network = "proxy"', id="egress-on-none"),
        pytest.param(WEB, {"egress": ["example.com"]}, "egress entries are host:port", id="bad-egress"),
        pytest.param(WEB, {"memory_mb": 1}, "memory_mb", id="limit-out-of-range"),
        pytest.param(WEB, {"typo": 1}, "typo", id="unknown-option"),
    ],
)
def test_the_merged_profile_is_validated_as_one(
    profile: dict[str, object], override: dict[str, object], problem: str
) -> None:
    # Each part is fine (or empty) on its own; the upstream's profile is what must be consistent.
    SandboxSettings.model_validate(profile)
    detail = refusal({"profile": "base", **override}, base=profile)
    assert "upstreams.local.sandbox" in detail
    assert problem in detail


def test_an_invalid_named_profile_is_refused_even_unused() -> None:
    detail = refusal("strict", lonely={"network": "proxy"})
    assert "sandbox.profiles.lonely" in detail
    assert 'network = "proxy" needs egress' in detail


@pytest.mark.parametrize("name", ["Web", "web.x", "-web", ""])
def test_profile_names_are_plain(name: str) -> None:
    assert "sandbox.profiles" in refusal("strict", **{name: {}})


def test_warnings_read_the_profile_an_upstream_selected() -> None:
    internal = {**WEB, "egress": ["api.internal:443"], "egress_allowed_networks": ["10.1.0.0/16"]}
    warnings = with_profiles("internal", internal=internal).warnings()
    assert any(w.startswith("upstreams.local.sandbox.egress_allowed_networks") and "10.1.0.0/16" in w for w in warnings)
    # A profile no upstream selects opens nothing up.
    assert not any("sandbox" in w for w in with_profiles("strict", internal=internal).warnings())


def test_environment_overrides_reach_named_profiles(tmp_path: Path) -> None:
    path = tmp_path / "bastion.toml"
    path.write_text(
        '[sandbox.profiles.web]\nnetwork = "proxy"\negress = ["api.github.com:443"]\n'
        '[upstreams.local]\ncommand = ["server"]\nsandbox = "web"\n'
    )
    settings = load_settings(path, {"MCP_BASTION_SANDBOX__PROFILES__WEB__MEMORY_MB": "2048"})
    assert settings.upstreams["local"].sandbox.memory_mb == 2048
    assert settings.sandbox.profiles["web"].memory_mb == 2048


def test_a_section_names_built_in_and_configured_profiles() -> None:
    section = SandboxSection.model_validate({"profiles": {"web": WEB}})
    assert section.named("strict") == SandboxSettings()
    assert not section.named("dangerously_disabled").strict
    assert section.named("web").memory_mb == 1024
    with pytest.raises(ConfigError, match=r"no sandbox profile 'nope' \(known: strict, dangerously_disabled, web;"):
        section.named("nope")
