"""Local users: the login check answers alike for every failure, and the operator's administration."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from mcp_bastion.identity.passwords import Passwords
from mcp_bastion.identity.users import MAX_PASSWORD_LENGTH, SQLUserDirectory, UserAdminError
from mcp_bastion.oauth.service import OAuthError, User, UserDirectory
from mcp_bastion.storage.db import Database
from mcp_bastion.storage.models import UserRow
from tests.identity.support import FAST, OLD, spy_on

pytestmark = pytest.mark.anyio

PASSWORD = "correct horse battery staple"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def directory(database: Database, clock: Clock) -> SQLUserDirectory:
    return SQLUserDirectory(database, Passwords(FAST), clock=clock)


async def stored_hash(database: Database, username: str) -> str:
    async with database.read() as connection:
        return (
            await connection.execute(select(UserRow.password_hash).where(UserRow.username == username))
        ).scalar_one()


# The login check.


async def test_authenticate_returns_the_user(directory: SQLUserDirectory) -> None:
    seam: UserDirectory = directory  # the pages talk to this protocol
    added = await directory.add("alice", PASSWORD, roles=["admin", "support"])
    user = await seam.authenticate("alice", PASSWORD)
    assert user == User(id=added.id, username="alice", roles=frozenset({"admin", "support"}))
    assert await seam.get(added.id) == user
    assert await seam.get("no-such-id") is None


async def test_every_failure_is_the_same_access_denied(directory: SQLUserDirectory) -> None:
    await directory.add("alice", PASSWORD)
    await directory.add("bob", PASSWORD)
    await directory.set_disabled("bob", True)
    failures = []
    for username, password in [("alice", "wrong password!"), ("nobody", PASSWORD), ("bob", PASSWORD), ("al ice", "x")]:
        with pytest.raises(OAuthError) as caught:
            await directory.authenticate(username, password)
        failures.append((caught.value.error, caught.value.description, caught.value.status, str(caught.value)))
    assert failures[0][0] == "access_denied"
    assert len(set(failures)) == 1


@pytest.mark.parametrize(
    ("username", "password", "dummies", "real"),
    [
        pytest.param("nobody", PASSWORD, 1, 0, id="unknown user: dummy verification"),
        pytest.param("bad name!", PASSWORD, 1, 0, id="impossible username: dummy verification"),
        pytest.param("alice", "wrong password!", 0, 1, id="wrong password: real verification"),
        pytest.param("carol", PASSWORD, 0, 1, id="disabled: password verified before refusing"),
    ],
)
async def test_each_refusal_costs_one_verification(
    directory: SQLUserDirectory, monkeypatch: pytest.MonkeyPatch, username: str, password: str, dummies: int, real: int
) -> None:
    await directory.add("alice", PASSWORD)
    await directory.add("carol", PASSWORD)
    await directory.set_disabled("carol", True)
    spy = spy_on(monkeypatch)
    with pytest.raises(OAuthError):
        await directory.authenticate(username, password)
    assert (spy.dummies, spy.real) == (dummies, real)


async def test_an_overlong_password_is_refused_without_hashing(
    directory: SQLUserDirectory, monkeypatch: pytest.MonkeyPatch
) -> None:
    await directory.add("alice", PASSWORD)
    spy = spy_on(monkeypatch)
    with pytest.raises(OAuthError) as caught:
        await directory.authenticate("alice", "x" * (MAX_PASSWORD_LENGTH + 1))
    assert caught.value.error == "access_denied"
    assert spy.calls == []


async def test_an_old_hash_is_replaced_after_a_successful_login(database: Database, clock: Clock) -> None:
    await SQLUserDirectory(database, Passwords(OLD), clock=clock).add("alice", PASSWORD)
    old_hash = await stored_hash(database, "alice")
    current = SQLUserDirectory(database, Passwords(FAST), clock=clock)

    with pytest.raises(OAuthError):
        await current.authenticate("alice", "wrong password!")
    assert await stored_hash(database, "alice") == old_hash  # only a verified password is re-hashed

    clock.now = 2000.0
    await current.authenticate("alice", PASSWORD)
    new_hash = await stored_hash(database, "alice")
    assert new_hash != old_hash
    assert not current.passwords.needs_rehash(new_hash)
    info = await current.find("alice")
    assert info is not None
    assert info.updated_at == 2000.0
    await current.authenticate("alice", PASSWORD)
    assert await stored_hash(database, "alice") == new_hash


async def test_a_rehash_never_overwrites_a_password_changed_meanwhile(database: Database, clock: Clock) -> None:
    await SQLUserDirectory(database, Passwords(OLD), clock=clock).add("alice", PASSWORD)
    old_hash = await stored_hash(database, "alice")
    current = SQLUserDirectory(database, Passwords(FAST), clock=clock)
    await current.set_password("alice", "a brand new password")
    changed = await stored_hash(database, "alice")
    info = await current.find("alice")
    assert info is not None
    await current._rehash(info.id, old_hash, PASSWORD)  # a login that verified against the old hash
    assert await stored_hash(database, "alice") == changed


# Administration.


@pytest.mark.parametrize("username", ["a", "alice", "alice.smith@example.com", "A-Z_0.9", "x" * 64])
async def test_valid_usernames(directory: SQLUserDirectory, username: str) -> None:
    assert (await directory.add(username, PASSWORD)).username == username


@pytest.mark.parametrize("username", ["", "x" * 65, "al ice", "alice/", "ålice", "alice\n", "alice:1"])
async def test_invalid_usernames(directory: SQLUserDirectory, username: str) -> None:
    with pytest.raises(UserAdminError) as caught:
        await directory.add(username, PASSWORD)
    assert caught.value.reason == "invalid_username"


@pytest.mark.parametrize(
    ("password", "allow_short", "accepted"),
    [
        pytest.param("x" * 12, False, True, id="12 characters"),
        pytest.param("x" * 11, False, False, id="11 characters"),
        pytest.param("demo", True, True, id="short when explicitly allowed"),
        pytest.param("", True, False, id="empty never"),
        pytest.param("x" * (MAX_PASSWORD_LENGTH + 1), True, False, id="too long"),
    ],
)
async def test_password_rules(directory: SQLUserDirectory, password: str, allow_short: bool, accepted: bool) -> None:
    if accepted:
        await directory.add("alice", password, allow_short_password=allow_short)
        await directory.authenticate("alice", password)
        return
    with pytest.raises(UserAdminError) as caught:
        await directory.add("alice", password, allow_short_password=allow_short)
    assert caught.value.reason == "weak_password"
    await directory.add("bob", PASSWORD)
    with pytest.raises(UserAdminError) as caught:
        await directory.set_password("bob", password, allow_short_password=allow_short)
    assert caught.value.reason == "weak_password"


async def test_a_username_is_taken_once(directory: SQLUserDirectory) -> None:
    await directory.add("alice", PASSWORD)
    with pytest.raises(UserAdminError) as caught:
        await directory.add("alice", "another password")
    assert caught.value.reason == "user_exists"


async def test_list_disable_enable_roles_and_passwd(directory: SQLUserDirectory, clock: Clock) -> None:
    alice = await directory.add("alice", PASSWORD, roles=["admin"])
    clock.now = 1100.0
    bob = await directory.add("bob", PASSWORD)
    assert [info.username for info in await directory.list()] == ["alice", "bob"]
    assert not hasattr(alice, "password_hash")

    clock.now = 1200.0
    disabled = await directory.set_disabled("alice", True)
    assert disabled.disabled
    assert disabled.updated_at == 1200.0
    assert disabled.created_at == 1000.0
    with pytest.raises(OAuthError):
        await directory.authenticate("alice", PASSWORD)
    assert (await directory.set_disabled("alice", False)).disabled is False
    await directory.authenticate("alice", PASSWORD)

    assert (await directory.set_roles("bob", ["viewer", "viewer", "ops"])).roles == frozenset({"ops", "viewer"})
    assert (await directory.authenticate("bob", PASSWORD)).roles == frozenset({"ops", "viewer"})
    with pytest.raises(UserAdminError) as caught:
        await directory.set_roles("bob", ["not a role"])
    assert caught.value.reason == "invalid_role"

    await directory.set_password("bob", "a brand new password")
    with pytest.raises(OAuthError):
        await directory.authenticate("bob", PASSWORD)
    assert (await directory.authenticate("bob", "a brand new password")).id == bob.id


@pytest.mark.parametrize("operation", ["disable", "roles", "passwd"])
async def test_administering_an_unknown_user(directory: SQLUserDirectory, operation: str) -> None:
    with pytest.raises(UserAdminError) as caught:
        if operation == "disable":
            await directory.set_disabled("nobody", True)
        elif operation == "roles":
            await directory.set_roles("nobody", ["admin"])
        else:
            await directory.set_password("nobody", PASSWORD)
    assert caught.value.reason == "unknown_user"
