"""``[[oauth.federation]]``: the settings section, its translation into ``OIDCProvider`` (``web.oidc_provider``)
and the startup discovery that must not stop the gateway (``web._keep_discovering``).

(These belong in tests/test_settings.py and tests/test_web.py; they live beside the pages that use them
while other work is under way in those files.)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import anyio
import pytest

from mcp_bastion import web
from mcp_bastion.errors import ConfigError
from mcp_bastion.oauth.federation import OIDCProvider
from mcp_bastion.oauth.refusal import Refusal
from mcp_bastion.settings import OIDCProviderSettings, load_settings, parse_settings

pytestmark = pytest.mark.anyio

UP = {"upstreams": {"up": {"url": "https://up.example/mcp"}}}
ENTRY: dict[str, object] = {"name": "corp", "issuer": "https://idp.example", "client_id": "bastion"}


def settings_with(*entries: Mapping[str, object], **oauth: object) -> dict[str, object]:
    return {**UP, "oauth": {"federation": list(entries), **oauth}}


def test_toml_array_of_tables(tmp_path: Path) -> None:
    path = tmp_path / "bastion.toml"
    path.write_text(
        '[upstreams.up]\nurl = "https://up.example/mcp"\n'
        '[[oauth.federation]]\nname = "corp"\ndisplay_name = "Corp SSO"\nissuer = "https://idp.example"\n'
        'client_id = "bastion"\nclient_secret = "env:CORP_SECRET"\n'
        '[oauth.federation.group_roles]\nanalysts = ["analyst"]\n'
        '[[oauth.federation]]\nname = "partner"\nissuer = "https://id.partner.example/realms/x"\nclient_id = "b"\n'
    )
    corp, partner = load_settings(path, {}).oauth.federation
    assert (corp.name, corp.display_name, corp.client_secret) == ("corp", "Corp SSO", "env:CORP_SECRET")
    assert corp.group_roles == {"analysts": ("analyst",)}
    assert partner.scopes == ("openid", "profile", "email")
    assert partner.allowed_email_domains is None


def test_secret_is_not_in_the_repr() -> None:
    entry = OIDCProviderSettings.model_validate({**ENTRY, "client_secret": "literal-s3cret"})
    assert "literal-s3cret" not in repr(entry)


@pytest.mark.parametrize(
    ("entries", "fragment"),
    [
        pytest.param([{**ENTRY, "clinet_id": "x"}], "clinet_id", id="typo-names-the-path"),
        pytest.param([{**ENTRY, "name": "Corp SSO"}], "name", id="name-not-a-slug"),
        pytest.param([{**ENTRY, "issuer": "http://idp.example"}], "must be https", id="plain-http"),
        pytest.param(
            [{**ENTRY, "issuer": "http://idp.example", "allow_insecure_http": True}], "loopback", id="http-off-loopback"
        ),
        pytest.param([{**ENTRY, "scopes": ["profile"]}], "openid", id="no-openid-scope"),
        pytest.param([{**ENTRY, "client_id": ""}], "client_id", id="empty-client-id"),
        pytest.param([{**ENTRY, "group_roles": {"admins": "admin"}}], "group_roles", id="role-as-a-bare-string"),
        pytest.param([ENTRY, ENTRY], "unique", id="duplicate-names"),
    ],
)
def test_refused(entries: list[dict[str, object]], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings(settings_with(*entries))
    assert fragment in info.value.detail


def test_federation_needs_the_authorization_server() -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings(settings_with(ENTRY, enabled=False))
    assert "oauth.enabled" in info.value.detail


def test_insecure_idp_is_a_startup_warning() -> None:
    entry = {**ENTRY, "issuer": "http://127.0.0.1:9000", "allow_insecure_http": True}
    warnings = parse_settings(settings_with(entry)).warnings()
    assert any(w.startswith("oauth.federation[corp].allow_insecure_http") for w in warnings)
    assert parse_settings(settings_with(ENTRY)).warnings() == []


def _provider(monkeypatch: pytest.MonkeyPatch, **changes: object) -> OIDCProvider:
    monkeypatch.setenv("CORP_SECRET", "from-the-environment")
    entry = OIDCProviderSettings.model_validate({**ENTRY, **changes})
    return web.oidc_provider(entry, "https://gw.example:8443")


def test_provider_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    provider = _provider(
        monkeypatch,
        client_secret="env:CORP_SECRET",
        group_roles={"admins": ["admin", "analyst"]},
        default_roles=["reader"],
        allowed_email_domains=["@Corp.example"],
    )
    # The redirect URI is derived from the public URL, one path per IdP.
    assert provider.redirect_uri == "https://gw.example:8443/authorize/federated/corp/callback"
    assert provider.client_secret == "from-the-environment"
    assert provider.group_roles == {"admins": frozenset({"admin", "analyst"})}
    assert provider.default_roles == frozenset({"reader"})
    assert provider.allowed_email_domains == frozenset({"corp.example"})
    assert provider.display_name == "idp.example"  # the issuer's host when no display name is set
    assert _provider(monkeypatch).client_secret is None  # a public client: PKCE alone
    assert _provider(monkeypatch, client_secret="literal").client_secret == "literal"


def test_missing_secret_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    with pytest.raises(ConfigError) as info:
        _provider(monkeypatch, client_secret="env:NOT_SET_ANYWHERE")
    assert "oauth.federation[corp].client_secret" in info.value.detail


def test_empty_email_domain_list_is_refused_not_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    # [] must not quietly become "no restriction".
    with pytest.raises(ConfigError) as info:
        _provider(monkeypatch, allowed_email_domains=[])
    assert info.value.detail.startswith("oauth.federation[corp]: ")
    assert "allowed_email_domains" in info.value.detail


class FlakyIdP:
    """``discover`` fails ``failures`` times, then succeeds."""

    def __init__(self, failures: int) -> None:
        self.provider = OIDCProvider(issuer="https://idp.example", client_id="c", redirect_uri="https://gw/cb")
        self.failures = failures
        self.calls = 0

    async def discover(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise Refusal("temporarily_unavailable", "idp_unreachable", "GET https://idp.example/...", status=503)


async def test_an_idp_down_at_startup_is_retried_until_it_answers(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(web, "DISCOVERY_RETRY_SECONDS", 0.0)  # the backoff's first wait, so no real waiting
    idp = FlakyIdP(failures=3)
    assert not await web._discover("corp", idp)  # type: ignore[arg-type]
    with anyio.fail_after(5):
        await web._keep_discovering("corp", idp)  # type: ignore[arg-type]
    assert idp.calls == 4
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 3
    assert all("idp_unreachable" in r.getMessage() for r in errors)
