"""The default KEK backend: a private file in the state directory holding every KEK version.

The file is JSON, readable by its owner only (``privatefile``: created 0600 from the first byte, written
atomically, refused when group or others could read it)::

    {"format": 1, "current": "local-2",
     "keys": [{"id": "local-1", "key": "<43 base64url chars>", "created_at": 1790000000.0}, ...]}

Invariants:
- the file is created on first use with one random 256-bit KEK; two processes creating it at once end up
  sharing the one that was written first;
- a file that is not exactly this shape (unknown format, duplicate ids, a key of the wrong size, a
  ``current`` that is not listed) is refused with ``ConfigError`` naming the file: never guessed at;
- ``rotate`` appends a version and makes it current under an exclusive lock on a sibling ``.lock`` file,
  re-reading the file inside the lock, so concurrent rotations in several processes never lose a version;
- versions are only ever added here: destroying one is a deliberate operator act, after every record that
  names it was re-wrapped;
- another process's rotation is picked up by ``reload()``, and by ``get`` when asked for an id it does not
  know yet (at most once per ``RELOAD_INTERVAL_SECONDS``, so garbage blobs cannot make it re-read in a loop).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, final

import orjson

from mcp_bastion.errors import ConfigError
from mcp_bastion.privatefile import exclusive_lock, read_private, write_atomic
from mcp_bastion.vault.kek import KEK, KEY_BYTES, UnknownKeyVersion, b64url_decode, b64url_encode

DEFAULT_FILENAME: Final = "vault.key"
"""The key file's name inside ``server.state_dir``."""
FORMAT: Final = 1
MAX_FILE_BYTES: Final = 256 * 1024
MAX_VERSIONS: Final = 1000
"""Far more than any rotation schedule produces; a bound on what a corrupted file can make us parse."""
RELOAD_INTERVAL_SECONDS: Final = 1.0
ID_PREFIX: Final = "local-"


@dataclass(frozen=True, slots=True)
class KeyVersion:
    """A KEK version as listed by ``versions`` (no key material)."""

    id: str
    created_at: float
    current: bool


@dataclass(frozen=True, slots=True)
class _Contents:
    keys: dict[str, KEK]
    created: dict[str, float]
    current: str


def _parse(data: bytes) -> _Contents:
    document = orjson.loads(data)
    if not isinstance(document, dict) or set(document) != {"format", "current", "keys"}:
        raise ValueError("expected an object with exactly 'format', 'current' and 'keys'")
    if document["format"] != FORMAT:
        raise ValueError(f"format {document['format']!r} (this version reads {FORMAT})")
    entries = document["keys"]
    if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_VERSIONS:
        raise ValueError(f"'keys' must be a list of 1 to {MAX_VERSIONS} versions")
    keys: dict[str, KEK] = {}
    created: dict[str, float] = {}
    for entry in entries:
        if not isinstance(entry, dict) or set(entry) != {"id", "key", "created_at"}:
            raise ValueError("each version needs exactly 'id', 'key' and 'created_at'")
        kek_id, key, created_at = entry["id"], entry["key"], entry["created_at"]
        if not isinstance(kek_id, str) or not isinstance(key, str):
            raise ValueError("'id' and 'key' must be strings")
        if isinstance(created_at, bool) or not isinstance(created_at, int | float):
            raise ValueError(f"version {kek_id!r}: 'created_at' must be a number")
        if kek_id in keys:
            raise ValueError(f"version {kek_id!r} appears twice")
        keys[kek_id] = KEK(kek_id, b64url_decode(key, "a key"))  # KEK checks the id's form and the key's size
        created[kek_id] = float(created_at)
    current = document["current"]
    if not isinstance(current, str) or current not in keys:
        raise ValueError(f"'current' {current!r} is not one of the listed versions")
    return _Contents(keys, created, current)


def _render(contents: _Contents) -> bytes:
    entries = [
        {"id": kek.id, "key": b64url_encode(kek.key), "created_at": contents.created[kek.id]}
        for kek in contents.keys.values()
    ]
    return orjson.dumps({"format": FORMAT, "current": contents.current, "keys": entries}, option=orjson.OPT_INDENT_2)


def _next_id(keys: dict[str, KEK]) -> str:
    numbers = [int(kek_id[len(ID_PREFIX) :]) for kek_id in keys if kek_id.removeprefix(ID_PREFIX).isdigit()]
    return f"{ID_PREFIX}{max(numbers, default=0) + 1}"


@final
class LocalKeyFile:
    """KEK versions in a 0600 file. Implements ``kek.KeyEncryptionKeys``."""

    __slots__ = ("_clock", "_contents", "_monotonic", "_random", "_reloaded_at", "path")

    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        """Open the key file at ``path``, creating it with one KEK if it does not exist.

        Raises ``ConfigError`` when the file is group/world-readable, not a regular file, or malformed.
        ``clock`` stamps new versions; ``monotonic`` paces re-reads on unknown ids.
        """
        self.path: Final = path
        self._clock = clock
        self._monotonic = monotonic
        self._random = random
        self._reloaded_at = -math.inf
        if not path.exists() and not path.is_symlink():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            kek_id = f"{ID_PREFIX}1"
            first = _Contents({kek_id: self._new_kek(kek_id)}, {kek_id: clock()}, kek_id)
            write_atomic(path, _render(first), keep_existing=True)
        self._contents = self._read()

    @property
    def current(self) -> KEK:
        contents = self._contents
        return contents.keys[contents.current]

    def get(self, kek_id: str) -> bytes:
        kek = self._contents.keys.get(kek_id)
        if kek is None and self._monotonic() - self._reloaded_at >= RELOAD_INTERVAL_SECONDS:
            # Perhaps another process rotated since we read the file. Only misses count towards the rate
            # limit, so the first miss after a start or a rotation always looks.
            self._reloaded_at = self._monotonic()
            self.reload()
            kek = self._contents.keys.get(kek_id)
        if kek is None:
            raise UnknownKeyVersion(kek_id)
        return kek.key

    @property
    def versions(self) -> tuple[KeyVersion, ...]:
        """Every version, oldest first, without key material."""
        contents = self._contents
        return tuple(KeyVersion(i, contents.created[i], i == contents.current) for i in contents.keys)

    def reload(self) -> None:
        """Re-read the file (another process may have rotated)."""
        self._contents = self._read()

    def rotate(self) -> KEK:
        """Add a new random KEK version and make it current; older versions stay for opening."""
        with exclusive_lock(self.path):
            contents = self._read()
            if len(contents.keys) >= MAX_VERSIONS:
                raise ConfigError(f"KEK file {self.path} already holds {MAX_VERSIONS} versions")
            kek_id = _next_id(contents.keys)
            keys = {**contents.keys, kek_id: self._new_kek(kek_id)}
            rotated = _Contents(keys, {**contents.created, kek_id: self._clock()}, kek_id)
            write_atomic(self.path, _render(rotated))
            self._contents = rotated
        return self.current

    def _new_kek(self, kek_id: str) -> KEK:
        return KEK(kek_id, self._random(KEY_BYTES))

    def _read(self) -> _Contents:
        data = read_private(self.path, "KEK file", max_bytes=MAX_FILE_BYTES)
        try:
            return _parse(data)
        except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
            # ``exc`` never carries key bytes: only ids, counts and shapes are named above.
            raise ConfigError(f"KEK file {self.path} is malformed: {exc}") from None
