"""The operator commands: check-config names problems and weakening options; token mints a bound token."""

from __future__ import annotations

from pathlib import Path

import anyio
from typer.testing import CliRunner

from mcp_bastion.cli.main import app
from mcp_bastion.oauth.access_token import AccessClaims, AccessTokenVerifier, TrustedIssuer
from mcp_bastion.oauth.localissuer import KEY_FILENAME, LocalIssuer
from mcp_bastion.settings import load_settings
from mcp_bastion.storage.db import default_url, open_database
from mcp_bastion.web import key_ring, open_vault


def config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "bastion.toml"
    path.write_text(
        f'[server]\nstate_dir = "{tmp_path / "state"}"\nport = 9443\n'
        f'[upstreams.customers]\nurl = "https://customers.internal/mcp"\n{extra}'
    )
    return path


def test_check_config_ok_and_warnings(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["check-config", "-c", str(config(tmp_path, 'allow_methods = ["x/y"]\n'))])
    assert result.exit_code == 0, result.output
    assert "ok: 1 upstream(s): customers" in result.output
    assert "WARNING: upstreams.customers.allow_methods" in result.output


def test_check_config_names_the_bad_option(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["check-config", "-c", str(config(tmp_path, "timeout = 3\n"))])
    assert result.exit_code == 2
    assert "upstreams.customers.timeout" in result.output


def test_token_is_bound_to_its_server(tmp_path: Path) -> None:
    path = config(tmp_path)
    result = CliRunner().invoke(app, ["token", "-c", str(path), "--sub", "alice", "--server", "customers"])
    assert result.exit_code == 0, result.output
    claims = anyio.run(verify_with_ring, tmp_path, result.output.strip(), "https://127.0.0.1:9443/mcp/customers")
    assert claims.subject == "alice"
    assert claims.client_id == "cli"
    unknown = CliRunner().invoke(app, ["token", "-c", str(path), "--sub", "alice", "--server", "nope"])
    assert unknown.exit_code == 2
    assert "unknown server 'nope'" in unknown.output


def test_token_without_the_authorization_server_uses_the_key_file(tmp_path: Path) -> None:
    path = config(tmp_path, "[oauth]\nenabled = false\n")
    result = CliRunner().invoke(app, ["token", "-c", str(path), "--sub", "alice", "--server", "customers"])
    assert result.exit_code == 0, result.output
    issuer = LocalIssuer.load_or_create(tmp_path / "state" / KEY_FILENAME, "https://127.0.0.1:9443")

    async def verify() -> AccessClaims:
        verifier = AccessTokenVerifier([TrustedIssuer(issuer.issuer, issuer.public_keys())])
        return await verifier.verify(result.output.strip(), audience="https://127.0.0.1:9443/mcp/customers")

    assert anyio.run(verify).subject == "alice"


async def verify_with_ring(tmp_path: Path, token: str, audience: str) -> AccessClaims:
    """Verify ``token`` the way a gateway sharing the state directory does: against the database's keys."""
    settings = load_settings(tmp_path / "bastion.toml")
    async with open_database(default_url(settings)) as db:
        ring = key_ring(db, open_vault(settings), settings)
        verifier = AccessTokenVerifier([TrustedIssuer(ring.issuer, ring.key_source)], cache_size=0)
        return await verifier.verify(token, audience=audience)
