"""End to end: the gateway's secrets at rest under a remote root key — a real OpenBao (Transit) and a real
KMS API (moto_server) — and what an operator does with them (`mcp-bastion vault status|rotate`).

The gateway starts only when the root key answers; its signing keys are sealed under KEKs the root key
wraps; nothing stored (the database, the key file, the audit log) contains a secret in the clear or in
base64; rotation moves every stored secret to a new KEK while the gateway serves.
"""

from __future__ import annotations

import base64
from pathlib import Path

import anyio
import boto3
import orjson
import pytest
from typer.testing import CliRunner

from mcp_bastion.app import build_gateway
from mcp_bastion.cli.main import app
from mcp_bastion.errors import Unavailable
from mcp_bastion.settings import parse_settings
from mcp_bastion.vault.remote import FILENAME
from tests.e2e.gateway import RunningGateway, running_gateway
from tests.e2e.test_refusals import MODERN_HEADERS, call
from tests.helpers.moto import moto_server
from tests.helpers.openbao import OpenBaoServer, openbao_server
from tests.helpers.procs import serve_module

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


def openbao_section(bao: OpenBaoServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    monkeypatch.setenv("TEST_BAO_TOKEN", bao.root_token)  # the token as a reference, never in the file
    return {
        "backend": "openbao",
        "openbao": {"url": bao.url, "token": "env:TEST_BAO_TOKEN", "allow_insecure_http": True},
    }


def signing_secrets(gw: RunningGateway) -> list[bytes]:
    """The private key material the gateway holds, in every encoding it could leak in."""
    authorization = gw.gateway.authorization
    assert authorization is not None
    found: list[bytes] = []
    for _sealed, key in authorization.keys._opened.values():
        d = str(key.as_dict(private=True)["d"])
        raw = base64.urlsafe_b64decode(d + "=" * (-len(d) % 4))
        found += [d.encode(), raw, base64.b64encode(raw), raw.hex().encode()]
    assert found  # the ring holds its keys: the scan below has something to look for
    return found


def assert_nowhere_in_the_clear(state: Path, secrets_: list[bytes]) -> None:
    for path in state.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for secret in secrets_:
                assert secret not in data, f"a secret in the clear in {path}"


async def test_the_gateway_on_openbao_transit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with openbao_server(tmp_path / "bao") as bao:
        async with serve_module("mcp_bastion.demo.customers", "--http", "--port", "0") as upstream_url:
            upstreams = {"up": {"url": upstream_url, "allow_insecure_http": True}}
            async with running_gateway(tmp_path, upstreams, vault=openbao_section(bao, monkeypatch)) as gw:
                async with gw.http(gw.token()) as http:
                    response = await http.post(gw.url("up"), json=call(), headers=MODERN_HEADERS)
                assert response.status_code == 200, response.text
                document = orjson.loads((tmp_path / "state" / FILENAME).read_bytes())
                assert document["backend"] == "openbao-transit:transit/mcp-bastion"
                assert [entry["id"] for entry in document["keys"]] == ["remote-1"]
                assert all(entry["wrapped"] for entry in document["keys"])
                # Transit created the derived key itself: the KEK id is bound as the derivation context.
                key = bao.data("GET", "transit/keys/mcp-bastion")
                assert key["derived"] is True
                assert_nowhere_in_the_clear(tmp_path / "state", signing_secrets(gw))
                assert not (tmp_path / "state" / "vault.key").exists()  # no local KEK file on this backend


async def test_without_its_root_key_the_gateway_does_not_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with openbao_server(tmp_path / "bao") as bao:
        vault = openbao_section(bao, monkeypatch)
    settings = parse_settings(
        {
            "server": {"host": "127.0.0.1", "port": 9443, "state_dir": str(tmp_path / "state")},
            "upstreams": {"up": {"url": "http://127.0.0.1:9/mcp", "allow_insecure_http": True}},
            "vault": vault,
        }
    )
    gateway = build_gateway(settings)
    assert gateway.authorization is not None
    with pytest.raises(Unavailable, match=r"127\.0\.0\.1"):
        with anyio.fail_after(30):
            await gateway.authorization.startup()
    await gateway.authorization.db.aclose()


async def test_the_gateway_on_aws_kms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with moto_server(tmp_path / "moto") as kms:
        admin = boto3.session.Session().client(
            "kms", region_name="eu-west-1", endpoint_url=kms.url, aws_access_key_id="a", aws_secret_access_key="a"
        )
        key_id = admin.create_key(Description="gateway root key")["KeyMetadata"]["KeyId"]
        admin.close()
        monkeypatch.setenv("TEST_KMS_SECRET", "test-secret-key")
        vault = {
            "backend": "aws-kms",
            "aws_kms": {
                "key_id": key_id,
                "region": "eu-west-1",
                "endpoint_url": kms.url,
                "access_key_id": "env:TEST_KMS_SECRET",
                "secret_access_key": "env:TEST_KMS_SECRET",
                "allow_insecure_http": True,
            },
        }
        async with serve_module("mcp_bastion.demo.customers", "--http", "--port", "0") as upstream_url:
            upstreams = {"up": {"url": upstream_url, "allow_insecure_http": True}}
            async with running_gateway(tmp_path, upstreams, vault=vault) as gw:
                async with gw.http(gw.token()) as http:
                    response = await http.post(gw.url("up"), json=call(), headers=MODERN_HEADERS)
                assert response.status_code == 200, response.text
                document = orjson.loads((tmp_path / "state" / FILENAME).read_bytes())
                assert document["backend"] == f"aws-kms:eu-west-1/{key_id}"
                assert_nowhere_in_the_clear(tmp_path / "state", signing_secrets(gw))


def test_vault_rotation_on_openbao_from_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with openbao_server(tmp_path / "bao") as bao:
        section = openbao_section(bao, monkeypatch)
        bao_section = section["openbao"]
        assert isinstance(bao_section, dict)
        path = tmp_path / "bastion.toml"
        path.write_text(
            f'[server]\nstate_dir = "{tmp_path / "state"}"\nport = 9443\n'
            '[upstreams.customers]\nurl = "https://customers.internal/mcp"\n'
            f'[vault]\nbackend = "openbao"\n[vault.openbao]\nurl = "{bao.url}"\ntoken = "env:TEST_BAO_TOKEN"\n'
            "allow_insecure_http = true\n"
        )
        runner = CliRunner()
        minted = runner.invoke(app, ["token", "-c", str(path), "--sub", "alice", "--server", "customers"])
        assert minted.exit_code == 0, minted.output
        before = runner.invoke(app, ["vault", "status", "-c", str(path)])
        assert before.exit_code == 0, before.output
        assert "openbao-transit:transit/mcp-bastion" in before.output
        assert "remote-1" in before.output
        rotated = runner.invoke(app, ["vault", "rotate", "-c", str(path)])
        assert rotated.exit_code == 0, rotated.output
        assert "new KEK version remote-2 is current" in rotated.output
        assert "re-wrapped 1," in rotated.output
        # The root key rotates in OpenBao; the KEKs are re-wrapped under its new version; the old root
        # version is retired; everything still opens (a token mints from the re-wrapped signing key).
        bao.api("POST", "transit/keys/mcp-bastion/rotate")
        rewrapped = runner.invoke(app, ["vault", "rewrap-root", "-c", str(path)])
        assert rewrapped.exit_code == 0, rewrapped.output
        assert "re-wrapped 2 KEK version(s)" in rewrapped.output
        bao.api("POST", "transit/keys/mcp-bastion/config", {"min_decryption_version": 2})
        again = runner.invoke(app, ["token", "-c", str(path), "--sub", "alice", "--server", "customers"])
        assert again.exit_code == 0, again.output
