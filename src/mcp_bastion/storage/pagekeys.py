"""The key signing the login and consent pages' cookies and forms, kept in the database.

Replicas share the database but not necessarily a state directory (a remote vault backend needs none), and a
login started on one replica may be posted to another: a key per state directory would refuse it there.

Invariants:
- one key for every replica: the first start inserts the row only if it is absent and every caller then
  reads the row back, so replicas starting at once all use the one that won;
- never stored in the clear: the row holds a vault blob sealed for (owner = ``ROW_ID``, purpose ``PURPOSE``);
- fails closed: a row that cannot be opened with this vault (another vault key, a blob moved from another
  row) is a ``ConfigError``, never silently replaced (that would end every login in progress on every
  replica, and the other replicas would keep the old key);
- an installation that kept the key in the state directory (``legacy``) imports it on the first start, so
  logins in progress during the upgrade stay valid. The file is left in place for replicas not yet upgraded.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from mcp_bastion.errors import ConfigError
from mcp_bastion.privatefile import read_private
from mcp_bastion.storage.db import Database
from mcp_bastion.storage.models import PageKeyRow
from mcp_bastion.vault.envelope import InvalidCiphertext, Vault

PURPOSE: Final = "page-session-key"
ROW_ID: Final = "pages"
KEY_BYTES: Final = 32


async def load_page_key(
    db: Database, vault: Vault, *, legacy: Path | None = None, clock: Callable[[], float] = time.time
) -> bytes:
    """The pages' signing key: the stored one, else ``legacy`` (a key file) if it exists, else a new one."""
    stored = await _read(db, vault)
    if stored is not None:
        return stored
    key = _first_key(legacy)
    row = {"id": ROW_ID, "key": vault.seal(key, owner=ROW_ID, purpose=PURPOSE), "created_at": clock()}
    try:
        async with db.transaction() as connection:
            await connection.execute(insert(PageKeyRow).values(row))
    except IntegrityError:
        pass  # another replica inserted first: its key is the one everybody uses
    stored = await _read(db, vault)
    if stored is None:  # deleted in between: refuse rather than sign with a key nobody else has
        raise ConfigError("page session key: the page_keys row disappeared while it was being created")
    return stored


async def _read(db: Database, vault: Vault) -> bytes | None:
    async with db.read() as connection:
        blob = (await connection.execute(select(PageKeyRow.key).where(PageKeyRow.id == ROW_ID))).scalar_one_or_none()
    if blob is None:
        return None
    try:
        key = vault.open(bytes(blob), owner=ROW_ID, purpose=PURPOSE)
    except InvalidCiphertext as exc:
        raise ConfigError(
            "page session key: the page_keys row cannot be opened with this vault (another vault key, or the "
            "row was altered); restore the vault key, or delete the row to start over (logins in progress fail)"
        ) from exc
    if len(key) != KEY_BYTES:
        raise ConfigError(f"page session key: the page_keys row must hold {KEY_BYTES} bytes")
    return key


def _first_key(legacy: Path | None) -> bytes:
    """The legacy file's key if there is one, else a new key (a small read, once, at startup)."""
    if legacy is None or not legacy.exists():
        return secrets.token_bytes(KEY_BYTES)
    key = read_private(legacy, "page session key", max_bytes=KEY_BYTES)
    if len(key) != KEY_BYTES:
        raise ConfigError(f"page session key {legacy} must hold {KEY_BYTES} bytes")
    return key
