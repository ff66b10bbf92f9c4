"""``mcp-bastion users``: passwords only from a hidden prompt or stdin, hashes never shown, refusals as exit codes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import anyio
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from mcp_bastion.cli.users import app
from mcp_bastion.identity.users import SQLUserDirectory
from mcp_bastion.oauth.service import OAuthError, User
from mcp_bastion.oauth.store import ConsentRecord, FamilyRecord
from mcp_bastion.storage.db import Database, open_database
from mcp_bastion.storage.models import UserRow
from mcp_bastion.storage.oauthstore import SQLOAuthStore
from tests.storage.support import sqlite_url

T = TypeVar("T")
PASSWORD = "correct horse battery staple"


def config(tmp_path: Path) -> Path:
    path = tmp_path / "bastion.toml"
    path.write_text(
        f'[server]\nstate_dir = "{tmp_path / "state"}"\n[upstreams.customers]\nurl = "https://customers.internal/mcp"\n'
    )
    return path


def users(tmp_path: Path, *args: str, stdin: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, [*args, "-c", str(config(tmp_path))], input=stdin)
    return result.exit_code, result.output


def on_database(tmp_path: Path, work: Callable[[Database], Awaitable[T]]) -> T:
    async def main() -> T:
        async with open_database(sqlite_url(tmp_path / "state" / "bastion.db")) as db:
            return await work(db)

    return anyio.run(main)


def login(tmp_path: Path, username: str, password: str) -> User | None:
    async def work(db: Database) -> User | None:
        try:
            return await SQLUserDirectory(db).authenticate(username, password)
        except OAuthError:
            return None

    return on_database(tmp_path, work)


def test_add_with_a_hidden_prompt_twice_then_log_in(tmp_path: Path) -> None:
    code, output = users(tmp_path, "add", "alice", "--role", "admin", "-r", "ops", stdin=f"{PASSWORD}\n{PASSWORD}\n")
    assert code == 0, output
    assert "added user alice" in output
    assert PASSWORD not in output  # hidden input is not echoed
    user = login(tmp_path, "alice", PASSWORD)
    assert user is not None
    assert user.roles == frozenset({"admin", "ops"})

    async def stored_hash(db: Database) -> str:
        async with db.read() as connection:
            return (await connection.execute(select(UserRow.password_hash))).scalar_one()

    # The command line uses the production parameters, not the tests' cheap ones.
    assert on_database(tmp_path, stored_hash).startswith("$argon2id$v=19$m=65536,t=3,p=4$")


def test_add_from_stdin(tmp_path: Path) -> None:
    code, output = users(tmp_path, "add", "bob", "--password-stdin", stdin=f"{PASSWORD}\n")
    assert code == 0, output
    assert login(tmp_path, "bob", PASSWORD) is not None


def test_prompts_that_differ_add_nobody(tmp_path: Path) -> None:
    code, _ = users(tmp_path, "add", "alice", stdin=f"{PASSWORD}\n{PASSWORD}x\n")
    assert code != 0
    assert users(tmp_path, "list") == (0, "no users\n")


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        pytest.param(["add", "al ice"], None, "a username is 1 to 64", id="bad username, before any prompt"),
        pytest.param(["add", "alice", "--password-stdin"], "short\n", "at least 12", id="short password"),
        pytest.param(["add", "alice", "--password-stdin", "-r", "a b"], f"{PASSWORD}\n", "role", id="bad role"),
        pytest.param(["disable", "nobody"], None, "no user 'nobody'", id="unknown user"),
        pytest.param(["passwd", "nobody", "--password-stdin"], f"{PASSWORD}\n", "no user", id="passwd unknown"),
    ],
)
def test_refusals_exit_1(tmp_path: Path, args: list[str], stdin: str | None, message: str) -> None:
    code, output = users(tmp_path, *args, stdin=stdin)
    assert code == 1
    assert message in output


def test_a_weak_password_needs_the_flag_that_says_so(tmp_path: Path) -> None:
    code, output = users(tmp_path, "add", "demo", "--password-stdin", "--allow-weak-password", stdin="demo\n")
    assert code == 0, output
    assert "WARNING" in output
    assert login(tmp_path, "demo", "demo") is not None


def test_a_name_is_taken_once(tmp_path: Path) -> None:
    assert users(tmp_path, "add", "alice", "--password-stdin", stdin=f"{PASSWORD}\n")[0] == 0
    code, output = users(tmp_path, "add", "alice", "--password-stdin", stdin=f"{PASSWORD}\n")
    assert code == 1
    assert "already exists" in output


def test_list_never_shows_hashes(tmp_path: Path) -> None:
    users(tmp_path, "add", "alice", "--password-stdin", "-r", "admin", stdin=f"{PASSWORD}\n")
    users(tmp_path, "add", "bob", "--password-stdin", stdin=f"{PASSWORD}\n")
    users(tmp_path, "disable", "bob")
    code, output = users(tmp_path, "list")
    assert code == 0, output
    assert "alice" in output
    assert "admin" in output
    assert "enabled" in output
    assert "bob" in output
    assert "disabled" in output
    assert "argon2" not in output
    assert "$" not in output


def test_disable_ends_the_users_grants_and_enable_lets_them_back(tmp_path: Path) -> None:
    users(tmp_path, "add", "alice", "--password-stdin", stdin=f"{PASSWORD}\n")
    alice = login(tmp_path, "alice", PASSWORD)
    assert alice is not None

    async def grant(db: Database) -> None:
        store = SQLOAuthStore(db)
        for family_id, subject in (("f-alice", alice.id), ("f-other", "someone-else")):
            await store.put_family(
                FamilyRecord(family_id, "c1", subject, "https://gw/mcp/customers", frozenset(), 0, 9e9)
            )

    on_database(tmp_path, grant)
    assert users(tmp_path, "disable", "alice") == (
        0,
        "disabled alice; ended 1 grant(s); deleted 0 upstream credential(s)\n",
    )
    assert login(tmp_path, "alice", PASSWORD) is None

    async def families(db: Database) -> list[str | None]:
        store = SQLOAuthStore(db)
        return [(await store.get_family(f)).reason for f in ("f-alice", "f-other")]  # type: ignore[union-attr]

    assert on_database(tmp_path, families) == ["user_disabled", None]
    assert users(tmp_path, "enable", "alice") == (0, "enabled alice\n")
    assert login(tmp_path, "alice", PASSWORD) is not None


def test_passwd_and_roles(tmp_path: Path) -> None:
    users(tmp_path, "add", "alice", "--password-stdin", stdin=f"{PASSWORD}\n")
    code, output = users(tmp_path, "passwd", "alice", stdin="a brand new password\na brand new password\n")
    assert code == 0, output
    assert login(tmp_path, "alice", PASSWORD) is None
    assert login(tmp_path, "alice", "a brand new password") is not None
    assert users(tmp_path, "roles", "alice", "-r", "viewer", "-r", "admin") == (0, "roles of alice: admin, viewer\n")
    assert users(tmp_path, "roles", "alice") == (0, "roles of alice: -\n")


def test_an_unreachable_database_exits_1(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("not a directory")
    code, output = users(tmp_path, "list")
    assert code == 1
    assert "database unavailable" in output


def test_a_bad_config_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nnope = 1\n")
    result = CliRunner().invoke(app, ["list", "-c", str(bad)])
    assert result.exit_code == 2
    assert "server.nope" in result.output


def test_revoke_consent_asks_again_and_ends_the_grants(tmp_path: Path) -> None:
    code, output = users(tmp_path, "add", "alice", "--password-stdin", stdin=f"{PASSWORD}\n")
    assert code == 0, output

    async def grant(db: Database) -> str:
        info = await SQLUserDirectory(db).find("alice")
        assert info is not None
        store = SQLOAuthStore(db)
        await store.put_consent(ConsentRecord(info.id, "agent", "https://gw/mcp/x", frozenset({"a"}), 1.0))
        await store.put_family(FamilyRecord("fam1", "agent", info.id, "https://gw/mcp/x", frozenset({"a"}), 1.0, 9e12))
        return info.id

    user_id = on_database(tmp_path, grant)
    code, output = users(tmp_path, "revoke-consent", "alice", "agent")
    assert code == 0, output
    assert "revoked 1 consent(s)" in output
    assert "ended 1 grant(s)" in output

    async def check(db: Database) -> tuple[bool, bool]:
        store = SQLOAuthStore(db)
        consents = await store.get_consents(user_id, "agent")
        family = await store.get_family("fam1")
        return all(c.revoked_at is not None for c in consents), family is not None and family.revoked_at is not None

    assert on_database(tmp_path, check) == (True, True)
    code, _ = users(tmp_path, "revoke-consent", "nobody", "agent")
    assert code != 0
