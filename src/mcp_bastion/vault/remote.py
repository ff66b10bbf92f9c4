"""KEK versions kept wrapped by a remote root key (OpenBao/Vault Transit, AWS KMS), unwrapped in memory.

The file (``vault-keys.json`` in the state directory, 0600, written atomically) holds only *wrapped* KEKs::

    {"format": 1, "backend": "openbao-transit:transit/mcp-bastion", "current": "remote-2",
     "keys": [{"id": "remote-1", "wrapped": "<base64url>", "created_at": 1790000000.0}, ...]}

so the file alone, or the file and the database together, open nothing: every KEK needs the remote root
key, and the remote never sees a record, only KEKs. ``load()`` unwraps every version (at startup), then
``maintain()`` re-reads the file and unwraps again every ``refresh_interval`` (another process may have
rotated; the remote may have revoked us). ``current`` and ``get`` answer from memory, synchronously, so
the request path never waits on the network.

Invariants:
- unwrapped keys older than ``max_stale`` are not used: ``current``/``get`` raise ``Unavailable`` (the
  remote has been unreachable too long, or it refuses us now) — fail closed, no plaintext fallback;
- a file written for another backend (another Transit key, another KMS key) is refused with
  ``ConfigError``: pointing the gateway at the wrong root key must not look like "every record forged";
- a version the remote refuses to unwrap (``InvalidCiphertext``: tampered, or below Transit's
  ``min_decryption_version``) is left out and logged by id; records sealed with it no longer open;
- ``rotate`` and ``rewrap_root`` take an exclusive lock on a sibling ``.lock`` file and re-read the file
  inside it, so concurrent operators in several processes never lose a version.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, final

import orjson

from mcp_bastion.errors import ConfigError, Unavailable
from mcp_bastion.privatefile import exclusive_lock, read_private, write_atomic
from mcp_bastion.vault.envelope import InvalidCiphertext
from mcp_bastion.vault.kek import KEK, KEY_BYTES, UnknownKeyVersion, b64url_decode, b64url_encode, check_kek_id
from mcp_bastion.vault.keyfile import KeyVersion
from mcp_bastion.vault.wrapper import KeyWrapper

logger = logging.getLogger(__name__)

FILENAME: Final = "vault-keys.json"
FORMAT: Final = 1
ID_PREFIX: Final = "remote-"
MAX_FILE_BYTES: Final = 1024 * 1024
MAX_VERSIONS: Final = 1000
REFRESH_SECONDS: Final = 300.0
MAX_STALE_SECONDS: Final = 900.0


@dataclass(frozen=True, slots=True)
class _Entry:
    id: str
    wrapped: bytes
    created_at: float


@dataclass(frozen=True, slots=True)
class _File:
    backend: str
    current: str
    entries: tuple[_Entry, ...]


def _parse(data: bytes) -> _File:
    document = orjson.loads(data)
    if not isinstance(document, dict) or set(document) != {"format", "backend", "current", "keys"}:
        raise ValueError("expected exactly 'format', 'backend', 'current' and 'keys'")
    if document["format"] != FORMAT:
        raise ValueError(f"format {document['format']!r} (this version reads {FORMAT})")
    backend, current, keys = document["backend"], document["current"], document["keys"]
    if not isinstance(backend, str) or not isinstance(current, str):
        raise ValueError("'backend' and 'current' must be strings")
    if not isinstance(keys, list) or not 1 <= len(keys) <= MAX_VERSIONS:
        raise ValueError(f"'keys' must list 1 to {MAX_VERSIONS} versions")
    entries: list[_Entry] = []
    for item in keys:
        if not isinstance(item, dict) or set(item) != {"id", "wrapped", "created_at"}:
            raise ValueError("each version needs exactly 'id', 'wrapped' and 'created_at'")
        kek_id, wrapped, created_at = item["id"], item["wrapped"], item["created_at"]
        if not isinstance(kek_id, str) or not isinstance(wrapped, str):
            raise ValueError("'id' and 'wrapped' must be strings")
        if isinstance(created_at, bool) or not isinstance(created_at, int | float):
            raise ValueError(f"version {kek_id!r}: 'created_at' must be a number")
        entries.append(_Entry(check_kek_id(kek_id), b64url_decode(wrapped, "'wrapped'"), float(created_at)))
    ids = [entry.id for entry in entries]
    if len(set(ids)) != len(ids):
        raise ValueError("a version id appears twice")
    if current not in ids:
        raise ValueError(f"'current' {current!r} is not one of the listed versions")
    return _File(backend, current, tuple(entries))


def _render(contents: _File) -> bytes:
    keys = [{"id": e.id, "wrapped": b64url_encode(e.wrapped), "created_at": e.created_at} for e in contents.entries]
    document = {"format": FORMAT, "backend": contents.backend, "current": contents.current, "keys": keys}
    return orjson.dumps(document, option=orjson.OPT_INDENT_2)


@final
class WrappedKeyRing:
    """``kek.KeyEncryptionKeys`` whose versions a remote root key wraps. ``await load()`` before use."""

    def __init__(
        self,
        wrapper: KeyWrapper,
        path: Path,
        *,
        refresh_interval: float = REFRESH_SECONDS,
        max_stale: float = MAX_STALE_SECONDS,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < refresh_interval < max_stale:
            raise ConfigError("vault: need 0 < refresh_interval < max_stale")
        self.wrapper: Final = wrapper
        self.path: Final = path
        self._refresh_interval = refresh_interval
        self._max_stale = max_stale
        self._clock = clock
        self._monotonic = monotonic
        self._keys: dict[str, KEK] = {}
        self._file: _File | None = None
        self._unwrapped_at: float | None = None
        self._lock = asyncio.Lock()

    # -- KeyEncryptionKeys ------------------------------------------------------------------------------

    @property
    def current(self) -> KEK:
        contents = self._fresh()
        kek = self._keys.get(contents.current)
        if kek is None:
            raise Unavailable(
                f"vault: the current KEK {contents.current} could not be unwrapped by {self.wrapper.name}"
            )
        return kek

    def get(self, kek_id: str) -> bytes:
        self._fresh()
        kek = self._keys.get(kek_id)
        if kek is None:
            raise UnknownKeyVersion(kek_id)
        return kek.key

    # -- life cycle ---------------------------------------------------------------------------------------

    async def load(self) -> None:
        """Create the file with a first version if there is none, then unwrap every version. Raises
        ``Unavailable`` (remote down or refusing) and ``ConfigError`` (file of another backend)."""
        await self.wrapper.prepare()
        if not self.path.exists() and not self.path.is_symlink():
            with exclusive_lock(self.path):
                if not self.path.exists():
                    kek_id = f"{ID_PREFIX}1"
                    _, wrapped = await self.wrapper.generate(kek_id)
                    first = _File(self.wrapper.name, kek_id, (_Entry(kek_id, wrapped, self._clock()),))
                    write_atomic(self.path, _render(first), keep_existing=True)
                    logger.info("vault: created KEK %s wrapped by %s", kek_id, self.wrapper.name)
        await self.refresh()

    async def refresh(self) -> None:
        """Re-read the file and unwrap what is new (versions already unwrapped are unwrapped again, so a
        remote that revoked us is noticed within one interval)."""
        async with self._lock:
            contents = self._read()
            keys: dict[str, KEK] = {}
            for entry in contents.entries:
                try:
                    key = await self.wrapper.unwrap(entry.wrapped, entry.id)
                except InvalidCiphertext:
                    logger.error("vault: KEK %s does not unwrap with %s; left out", entry.id, self.wrapper.name)
                    continue
                if len(key) != KEY_BYTES:
                    logger.error("vault: KEK %s unwrapped to the wrong size; left out", entry.id)
                    continue
                keys[entry.id] = KEK(entry.id, key)
            if contents.current not in keys:
                raise Unavailable(f"vault: the current KEK {contents.current} does not unwrap with {self.wrapper.name}")
            self._file, self._keys, self._unwrapped_at = contents, keys, self._monotonic()

    async def maintain(self) -> None:
        """Refresh every ``refresh_interval`` until cancelled; failures are logged, the keys in memory stay
        usable until ``max_stale`` (then the vault refuses)."""
        while True:
            await asyncio.sleep(self._refresh_interval)
            try:
                await self.refresh()
            except (Unavailable, ConfigError) as exc:
                logger.warning("vault: KEKs not refreshed: %s", exc.detail)

    async def rotate(self) -> KEK:
        """A new KEK version, wrapped by the remote, made current."""
        with exclusive_lock(self.path):
            contents = self._read()
            if len(contents.entries) >= MAX_VERSIONS:
                raise ConfigError(f"vault key file {self.path} already holds {MAX_VERSIONS} versions")
            numbers = [int(e.id[len(ID_PREFIX) :]) for e in contents.entries if e.id.removeprefix(ID_PREFIX).isdigit()]
            kek_id = f"{ID_PREFIX}{max(numbers, default=0) + 1}"
            key, wrapped = await self.wrapper.generate(kek_id)
            rotated = _File(contents.backend, kek_id, (*contents.entries, _Entry(kek_id, wrapped, self._clock())))
            write_atomic(self.path, _render(rotated))
        await self.refresh()
        return KEK(kek_id, key)

    async def rewrap_root(self) -> int:
        """Re-wrap every version under the root key's newest version (after rotating it in OpenBao or KMS),
        so older root versions can be retired (Transit ``min_decryption_version``). Returns the count."""
        with exclusive_lock(self.path):
            contents = self._read()
            entries = [_Entry(e.id, await self.wrapper.rewrap(e.wrapped, e.id), e.created_at) for e in contents.entries]
            write_atomic(self.path, _render(_File(contents.backend, contents.current, tuple(entries))))
        await self.refresh()
        return len(entries)

    @property
    def versions(self) -> tuple[KeyVersion, ...]:
        contents = self._file if self._file is not None else self._read()
        return tuple(KeyVersion(e.id, e.created_at, e.id == contents.current) for e in contents.entries)

    async def aclose(self) -> None:
        await self.wrapper.aclose()

    # -- internals ---------------------------------------------------------------------------------------

    def _fresh(self) -> _File:
        if self._file is None or self._unwrapped_at is None:
            raise Unavailable("vault: KEKs not loaded yet")
        if self._monotonic() - self._unwrapped_at > self._max_stale:
            raise Unavailable(f"vault: KEKs not refreshed from {self.wrapper.name} for {self._max_stale:.0f} s")
        return self._file

    def _read(self) -> _File:
        data = read_private(self.path, "vault key file", max_bytes=MAX_FILE_BYTES)
        try:
            contents = _parse(data)
        except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
            raise ConfigError(f"vault key file {self.path} is malformed: {exc}") from None
        if contents.backend != self.wrapper.name:
            raise ConfigError(
                f"vault key file {self.path} belongs to {contents.backend!r}, not {self.wrapper.name!r}: "
                "the gateway is configured with another root key"
            )
        return contents
