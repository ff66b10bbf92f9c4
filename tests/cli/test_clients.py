"""``mcp-bastion clients``: registration rules, the secret printed once and stored as a digest, removal."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import anyio
import pytest
from typer.testing import CliRunner

from mcp_bastion.cli.clients import app
from mcp_bastion.oauth.store import ClientRecord, FamilyRecord
from mcp_bastion.storage.db import open_database
from mcp_bastion.storage.oauthstore import SQLOAuthStore
from tests.storage.support import sqlite_url

T = TypeVar("T")


def config(tmp_path: Path) -> Path:
    path = tmp_path / "bastion.toml"
    path.write_text(
        f'[server]\nstate_dir = "{tmp_path / "state"}"\n'
        '[upstreams.customers]\nurl = "https://customers.internal/mcp"\n'
        '[upstreams.customers.scopes]\n"customers:read" = "read customers"\n"customers:write" = "change customers"\n'
    )
    return path


def clients(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [*args, "-c", str(config(tmp_path))])
    return result.exit_code, result.stdout, result.stderr


def on_store(tmp_path: Path, work: Callable[[SQLOAuthStore], Awaitable[T]]) -> T:
    async def main() -> T:
        async with open_database(sqlite_url(tmp_path / "state" / "bastion.db")) as db:
            return await work(SQLOAuthStore(db))

    return anyio.run(main)


def stored(tmp_path: Path, client_id: str) -> ClientRecord | None:
    async def work(store: SQLOAuthStore) -> ClientRecord | None:
        return await store.get_client(client_id)

    return on_store(tmp_path, work)


def printed(stdout: str, name: str) -> str:
    (value,) = [line.split(": ", 1)[1] for line in stdout.splitlines() if line.startswith(f"{name}: ")]
    return value


def test_a_public_client(tmp_path: Path) -> None:
    code, stdout, stderr = clients(
        tmp_path, "add", "--name", "Desktop app", "--redirect-uri", "http://127.0.0.1/callback",
        "--redirect-uri", "com.example.app:/oauth", "--scope", "customers:read",
    )  # fmt: skip
    assert code == 0, stderr
    assert "client_secret" not in stdout
    record = stored(tmp_path, printed(stdout, "client_id"))
    assert record is not None
    assert (record.kind, record.name, record.auth_method, record.secret_hash) == ("static", "Desktop app", "none", None)
    assert record.redirect_uris == ("http://127.0.0.1/callback", "com.example.app:/oauth")
    assert record.grant_types == {"authorization_code", "refresh_token"}
    assert record.scopes == frozenset({"customers:read"})


def test_a_confidential_client_sees_its_secret_once(tmp_path: Path) -> None:
    code, stdout, stderr = clients(
        tmp_path, "add", "--name", "Agent", "--redirect-uri", "https://agent.example/cb", "--confidential",
        "--client-credentials",
    )  # fmt: skip
    assert code == 0, stderr
    assert "shown only now" in stderr
    client_id, secret = printed(stdout, "client_id"), printed(stdout, "client_secret")
    record = stored(tmp_path, client_id)
    assert record is not None
    assert record.auth_method == "client_secret_basic"
    assert record.grant_types == {"authorization_code", "refresh_token", "client_credentials"}
    assert record.secret_hash == hashlib.sha256(secret.encode()).digest()
    code, listing, _ = clients(tmp_path, "list")
    assert code == 0
    assert client_id in listing
    assert "Agent" in listing
    assert secret not in listing
    assert record.secret_hash.hex() not in listing


def test_a_machine_client_needs_no_redirect_uri(tmp_path: Path) -> None:
    code, stdout, stderr = clients(tmp_path, "add", "--name", "Cron", "--confidential", "--client-credentials")
    assert code == 0, stderr
    record = stored(tmp_path, printed(stdout, "client_id"))
    assert record is not None
    assert record.grant_types == {"client_credentials"}
    assert record.redirect_uris == ()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--redirect-uri", "http://app.example/cb"], "redirect_uri", id="http off loopback"),
        pytest.param(["--redirect-uri", "https://app.example/cb#x"], "redirect_uri", id="fragment"),
        pytest.param(["--client-credentials"], "confidential", id="client_credentials for a public client"),
        pytest.param([], "--redirect-uri", id="no grant at all"),
        pytest.param(["--redirect-uri", "https://a.example/cb", "--scope", "admin"], "scope", id="unknown scope"),
    ],
)
def test_refusals_exit_1_and_store_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    code, _, stderr = clients(tmp_path, "add", "--name", "App", *args)
    assert code == 1
    assert message in stderr
    assert clients(tmp_path, "list")[1] == "no clients\n"


def test_remove_ends_the_clients_grants(tmp_path: Path) -> None:
    _, stdout, _ = clients(tmp_path, "add", "--name", "App", "--redirect-uri", "https://app.example/cb")
    client_id = printed(stdout, "client_id")

    async def grant(store: SQLOAuthStore) -> None:
        for family_id, owner in (("mine", client_id), ("theirs", "other-client")):
            await store.put_family(
                FamilyRecord(family_id, owner, "u1", "https://gw/mcp/customers", frozenset(), 0, 9e9)
            )

    on_store(tmp_path, grant)
    assert clients(tmp_path, "remove", client_id)[:2] == (0, f"removed {client_id}; ended 1 grant(s)\n")
    assert stored(tmp_path, client_id) is None

    async def revoked(store: SQLOAuthStore) -> list[bool]:
        return [await store.is_token_revoked(None, family, now=1.0) for family in ("mine", "theirs")]

    assert on_store(tmp_path, revoked) == [True, False]
    code, _, stderr = clients(tmp_path, "remove", client_id)
    assert code == 1
    assert "no client" in stderr


def test_list_empty(tmp_path: Path) -> None:
    assert clients(tmp_path, "list")[:2] == (0, "no clients\n")


def test_database_url_comes_from_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "elsewhere.db"
    monkeypatch.setenv("MCP_BASTION_STORAGE__URL", sqlite_url(elsewhere))
    assert clients(tmp_path, "list")[0] == 0
    assert elsewhere.exists()
    assert not (tmp_path / "state" / "bastion.db").exists()
