"""Files that hold secrets (private keys, key-encryption keys): written atomically with mode 0600 from the
first byte, and refused on read when anyone but the owner could read them.

Invariants:
- a private file is never, even for an instant, readable by group or others: the temporary file is created
  with its final mode (``O_EXCL``, no symlink following) and renamed into place;
- readers see the old file or the whole new one, never a mix, and the rename is made durable (fsync of the
  directory) so a power loss cannot bring back a previous key;
- reading refuses symlinks, non-regular files and group/world-readable modes with a ``ConfigError`` that
  names the file and the fix.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

from mcp_bastion.errors import ConfigError

PRIVATE_MODE = 0o600


def write_atomic(path: Path, data: bytes, *, mode: int = PRIVATE_MODE, keep_existing: bool = False) -> bool:
    """Write ``data`` to ``path`` atomically; returns False when ``keep_existing`` and the file exists.

    ``keep_existing`` uses ``link()``, which fails when the name exists (unlike ``replace()``): two
    processes creating the same key at once both end up using the one that won.
    """
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    written = True
    try:
        fd = os.open(temporary, flags, mode)
        with os.fdopen(fd, "wb") as handle:
            # The umask can only have removed bits; set the exact mode.
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if keep_existing:
            try:
                os.link(temporary, path)
            except FileExistsError:
                written = False
        else:
            os.replace(temporary, path)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from exc
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return written


def read_private(path: Path, what: str, *, max_bytes: int) -> bytes:
    """Read a private file, refusing links, non-regular files, loose modes and files over ``max_bytes``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(f"cannot open {what} {path}: {exc.strerror}") from exc
    try:
        _check_mode(os.fstat(fd), path, what)  # before fdopen, which refuses directories on its own terms
    except ConfigError:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ConfigError(f"{what} {path} is larger than {max_bytes} bytes")
    return data


def check_private(path: Path, what: str) -> None:
    """Refuse ``path`` if it is not a regular file readable by its owner only."""
    try:
        info = os.stat(path, follow_symlinks=False)
    except OSError as exc:
        raise ConfigError(f"cannot stat {what} {path}: {exc.strerror}") from exc
    _check_mode(info, path, what)


def _check_mode(info: os.stat_result, path: Path, what: str) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{what} {path} is not a regular file")
    if info.st_mode & 0o077:
        raise ConfigError(
            f"{what} {path} has mode {stat.S_IMODE(info.st_mode):04o}; it holds a secret and must not be "
            "readable by group or others (chmod 600, and consider the secret compromised)"
        )


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``<path>.lock`` (created 0600, never through a symlink) for the block:
    read-modify-write of a key file by several processes never loses an update."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock = path.with_name(path.name + ".lock")
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(lock, flags, PRIVATE_MODE)
    except OSError as exc:
        raise ConfigError(f"cannot open lock file {lock}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
