"""The operator commands: check-config names problems and weakening options; token mints a bound token."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mcp_bastion.cli.main import app
from mcp_bastion.oauth.access_token import AccessTokenVerifier, TrustedIssuer
from mcp_bastion.oauth.localissuer import LocalIssuer

pytestmark = pytest.mark.anyio


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


async def test_token_is_bound_to_its_server(tmp_path: Path) -> None:
    path = config(tmp_path)
    result = CliRunner().invoke(app, ["token", "-c", str(path), "--sub", "alice", "--server", "customers"])
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    issuer = LocalIssuer.load_or_create(tmp_path / "state" / "issuer-es256.jwk", "https://127.0.0.1:9443")
    verifier = AccessTokenVerifier([TrustedIssuer(issuer.issuer, issuer.public_keys())])
    claims = await verifier.verify(token, audience="https://127.0.0.1:9443/mcp/customers")
    assert claims.subject == "alice"
    unknown = CliRunner().invoke(app, ["token", "-c", str(path), "--sub", "alice", "--server", "nope"])
    assert unknown.exit_code == 2
