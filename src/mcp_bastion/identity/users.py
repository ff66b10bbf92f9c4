"""Local users in the ``users`` table: the login check (``oauth.service.UserDirectory``) and the operator's
administration (``mcp-bastion users add|list|disable|enable|passwd``).

Invariants:
- ``authenticate`` answers ``OAuthError("access_denied")`` for a wrong password, an unknown user and a
  disabled user alike, after the same work: an unknown user costs a dummy argon2id verification, a
  disabled user's password is verified before the refusal;
- a hash made with old parameters is replaced after a successful login (conditionally: a password changed
  meanwhile is not overwritten);
- usernames are 1–64 characters of ``[A-Za-z0-9._@-]`` and never change; the user's id (``sub``) is a
  random UUID;
- passwords are at least ``MIN_PASSWORD_LENGTH`` characters unless the caller says otherwise explicitly
  (the demo), at most ``MAX_PASSWORD_LENGTH``;
- hashes never leave this module: ``UserInfo`` has no hash field.
"""

from __future__ import annotations

import logging
import re
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from mcp_bastion.errors import Unavailable
from mcp_bastion.identity.passwords import Passwords, WrongPassword
from mcp_bastion.oauth.service import OAuthError, User
from mcp_bastion.storage.db import Database
from mcp_bastion.storage.models import UserRow

log = logging.getLogger(__name__)

USERNAME: Final = re.compile(r"[A-Za-z0-9._@-]{1,64}")
ROLE: Final = re.compile(r"[A-Za-z0-9._:@-]{1,64}")
MIN_PASSWORD_LENGTH: Final = 12
MAX_PASSWORD_LENGTH: Final = 1024
"""Longer input is refused before any hashing (it is not a password someone typed)."""

UserAdminReason = Literal["invalid_username", "invalid_role", "weak_password", "user_exists", "unknown_user"]


class UserAdminError(Exception):
    """An administration request refused; ``reason`` is stable, the message is for the operator."""

    def __init__(self, reason: UserAdminReason, message: str) -> None:
        super().__init__(message)
        self.reason: UserAdminReason = reason


@dataclass(frozen=True, slots=True)
class UserInfo:
    """A user as the operator sees it (no password hash)."""

    id: str
    username: str
    roles: frozenset[str]
    disabled: bool
    created_at: float
    updated_at: float

    def as_user(self) -> User:
        return User(id=self.id, username=self.username, roles=self.roles, disabled=self.disabled)


_COLUMNS: Final = (
    UserRow.id,
    UserRow.username,
    UserRow.roles,
    UserRow.disabled,
    UserRow.created_at,
    UserRow.updated_at,
    UserRow.password_hash,
)


def _denied() -> OAuthError:
    return OAuthError("access_denied", "invalid username or password")


def check_username(username: str) -> str:
    if not USERNAME.fullmatch(username):
        raise UserAdminError("invalid_username", "a username is 1 to 64 of the characters A-Z a-z 0-9 . _ @ -")
    return username


def check_roles(roles: Iterable[str]) -> frozenset[str]:
    found = frozenset(roles)
    for role in sorted(found):
        if not ROLE.fullmatch(role):
            raise UserAdminError("invalid_role", f"role {role!r}: 1 to 64 of the characters A-Z a-z 0-9 . _ : @ -")
    return found


def check_password(password: str, *, allow_short: bool = False) -> None:
    length = len(unicodedata.normalize("NFKC", password))
    if length > MAX_PASSWORD_LENGTH:
        raise UserAdminError("weak_password", f"a password is at most {MAX_PASSWORD_LENGTH} characters")
    if length == 0 or (length < MIN_PASSWORD_LENGTH and not allow_short):
        raise UserAdminError("weak_password", f"a password needs at least {MIN_PASSWORD_LENGTH} characters")


class SQLUserDirectory:
    """``UserDirectory`` over the ``users`` table, plus administration."""

    def __init__(self, db: Database, passwords: Passwords | None = None, *, clock: Callable[[], float] = time.time):
        self._db = db
        self.passwords = passwords or Passwords()
        self._clock = clock

    # The login check (oauth.service.UserDirectory).

    async def authenticate(self, username: str, password: str) -> User:
        if len(password) > MAX_PASSWORD_LENGTH:
            raise _denied()
        info, password_hash = await self._find(username) if USERNAME.fullmatch(username) else (None, None)
        if info is None or password_hash is None:
            await self.passwords.dummy_verify(password)
            raise _denied()
        try:
            await self.passwords.verify(password_hash, password)
        except WrongPassword:
            raise _denied() from None
        if info.disabled:
            raise _denied()
        if self.passwords.needs_rehash(password_hash):
            await self._rehash(info.id, password_hash, password)
        return info.as_user()

    async def get(self, user_id: str) -> User | None:
        async with self._db.read() as connection:
            row = (await connection.execute(select(*_COLUMNS).where(UserRow.id == user_id))).one_or_none()
        return None if row is None else _info(row).as_user()

    # Administration.

    async def find(self, username: str) -> UserInfo | None:
        info, _ = await self._find(username)
        return info

    async def add(
        self, username: str, password: str, roles: Iterable[str] = (), *, allow_short_password: bool = False
    ) -> UserInfo:
        """Create an enabled user; ``UserAdminError`` for a bad name, role or password, or a taken name."""
        check_username(username)
        granted = check_roles(roles)
        check_password(password, allow_short=allow_short_password)
        if await self.find(username) is not None:
            raise UserAdminError("user_exists", f"user {username!r} already exists")
        now = self._clock()
        info = UserInfo(str(uuid.uuid4()), username, granted, disabled=False, created_at=now, updated_at=now)
        values = {
            "id": info.id,
            "username": username,
            "password_hash": await self.passwords.hash(password),
            "roles": sorted(granted),
            "disabled": False,
            "created_at": now,
            "updated_at": now,
        }
        try:
            async with self._db.transaction() as connection:
                await connection.execute(insert(UserRow).values(values))
        except IntegrityError as exc:  # added by someone else since find()
            raise UserAdminError("user_exists", f"user {username!r} already exists") from exc
        return info

    async def list(self) -> Sequence[UserInfo]:
        async with self._db.read() as connection:
            rows = (await connection.execute(select(*_COLUMNS).order_by(UserRow.username))).all()
        return [_info(row) for row in rows]

    async def set_disabled(self, username: str, disabled: bool) -> UserInfo:
        """Disable (or enable) the user; a disabled user cannot log in, whatever the password."""
        return await self._update(username, disabled=disabled)

    async def set_password(self, username: str, password: str, *, allow_short_password: bool = False) -> UserInfo:
        check_password(password, allow_short=allow_short_password)
        if await self.find(username) is None:
            raise _unknown(username)
        return await self._update(username, password_hash=await self.passwords.hash(password))

    async def set_roles(self, username: str, roles: Iterable[str]) -> UserInfo:
        return await self._update(username, roles=sorted(check_roles(roles)))

    # Internals.

    async def _find(self, username: str) -> tuple[UserInfo | None, str | None]:
        async with self._db.read() as connection:
            row = (await connection.execute(select(*_COLUMNS).where(UserRow.username == username))).one_or_none()
        return (None, None) if row is None else (_info(row), row.password_hash)

    async def _update(self, username: str, **values: object) -> UserInfo:
        statement = (
            update(UserRow)
            .where(UserRow.username == username)
            .values(updated_at=self._clock(), **values)
            .returning(*_COLUMNS)
        )
        async with self._db.transaction() as connection:
            row = (await connection.execute(statement)).one_or_none()
        if row is None:
            raise _unknown(username)
        return _info(row)

    async def _rehash(self, user_id: str, old_hash: str, password: str) -> None:
        new_hash = await self.passwords.hash(password)
        statement = (
            update(UserRow)
            .where(UserRow.id == user_id, UserRow.password_hash == old_hash)
            .values(password_hash=new_hash, updated_at=self._clock())
        )
        try:
            async with self._db.transaction() as connection:
                await connection.execute(statement)
        except Unavailable as exc:
            # The login itself succeeded; the old hash still verifies and is replaced next time.
            log.warning("could not store the re-hashed password of user %s: %s", user_id, exc.detail)


def _info(row: tuple[str, str, list[str], bool, float, float, str]) -> UserInfo:
    user_id, username, roles, disabled, created_at, updated_at, _ = row
    return UserInfo(user_id, username, frozenset(roles), bool(disabled), created_at, updated_at)


def _unknown(username: str) -> UserAdminError:
    return UserAdminError("unknown_user", f"no user {username!r}")
