"""Secret references in settings: ``env:NAME``, ``file:/path`` and ``vault:<mount>/<path>#<key>`` instead of
literal secrets in the TOML.

A literal value is accepted too (some operators template their config), but a reference keeps the secret
out of the file that is most often copied, diffed and pasted into tickets.

``vault:secret/app/db#password`` is key ``password`` of the OpenBao / HashiCorp Vault KV secret ``app/db``
in the KV engine mounted at ``secret/`` (v1 or v2, found out by asking OpenBao; nested mounts work too). It
is read with the connection of ``[vault.openbao]`` (url, token or AppRole, namespace, ca_bundle, timeout),
whatever ``vault.backend`` is: with ``backend = "file"`` that section only serves these references. Its own
``token`` and ``secret_id`` must be ``env:`` or ``file:`` references (or literals), never ``vault:``.
``kv_reader(settings)`` gives the reader one startup shares: each secret is read once, however many settings
refer to it, and nothing is contacted (nor ``hvac`` imported) unless a ``vault:`` reference is resolved.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol, final

from mcp_bastion.errors import ConfigError
from mcp_bastion.privatefile import read_private

if TYPE_CHECKING:
    from mcp_bastion.settings import OpenBaoSettings, Settings

MAX_SECRET_BYTES = 4096
MAX_KV_PATH_CHARS: Final = 512
MAX_KV_KEY_CHARS: Final = 256
_KV_SEGMENT: Final = re.compile(r"[A-Za-z0-9_.@+=-]{1,128}")
_NOT_FROM_VAULT: Final = frozenset({"vault.openbao.token", "vault.openbao.secret_id"})
"""The credentials ``vault:`` references are read with cannot themselves be ``vault:`` references."""
_SYNTAX: Final = (
    "vault:<mount>/<path>#<key> (path segments of letters, digits and '_', '.', '-', '@', '+', '='; a non-empty key)"
)


class KVReader(Protocol):
    """Where ``vault:`` references are read (``vault.kv.OpenBaoKV``; tests may give a dict-backed one)."""

    def read(self, path: str) -> Mapping[str, object]:
        """The key/value pairs of the secret at ``path`` (``<mount>/<path>``); ``ConfigError`` whose detail
        says why it cannot be read (never with a secret in it)."""
        ...


def resolve_reference(value: str, setting: str, *, kv: KVReader | None = None) -> str:
    """The secret ``value`` refers to; ``ConfigError`` naming ``setting`` when it cannot be read. ``kv`` reads
    ``vault:`` references (``kv_reader(settings)``); without it they are refused."""
    if value.startswith("env:"):
        name = value[4:]
        secret = os.environ.get(name)
        if not secret:
            raise ConfigError(f"{setting}: environment variable {name!r} is not set")
        return secret
    if value.startswith("file:"):
        data = read_private(Path(value[5:]), f"{setting} file", max_bytes=MAX_SECRET_BYTES)
        return data.decode("utf-8").strip()
    if value.startswith("vault:"):
        return _from_vault(value, setting, kv)
    return value


def is_kv_path(path: str) -> bool:
    """Whether ``path`` is ``<mount>/<path>``: two segments or more, none empty, ``.`` or ``..``, of safe
    characters only (it becomes part of a request URL)."""
    segments = path.split("/")
    return (
        len(path) <= MAX_KV_PATH_CHARS
        and len(segments) >= 2
        and all(_KV_SEGMENT.fullmatch(part) and part not in (".", "..") for part in segments)
    )


def kv_reader(settings: Settings) -> KVReader | None:
    """The reader of ``vault:`` references over ``[vault.openbao]``, or ``None`` when that section is absent.
    Lazy: the token is resolved, ``hvac`` imported and OpenBao contacted on the first ``read``. Nothing to
    close (connections are closed after each read); share one per startup, it keeps what it read."""
    bao = settings.vault.openbao
    return _OpenBaoReferences(bao) if bao is not None else None


def _from_vault(value: str, setting: str, kv: KVReader | None) -> str:
    if setting in _NOT_FROM_VAULT:
        raise ConfigError(
            f"{setting}: cannot be a vault: reference (it is the credential vault: references are read "
            "with); use env: or file:"
        )
    # The value is shown only once it parses as a reference: a literal secret that happens to start with
    # "vault:" (a Transit ciphertext, say) must not land in the log.
    path, _, key = value[6:].partition("#")
    if not is_kv_path(path) or not key or len(key) > MAX_KV_KEY_CHARS or not key.isprintable():
        raise ConfigError(f"{setting}: not a valid vault: reference (the value is not shown); write {_SYNTAX}")
    if kv is None:
        raise ConfigError(
            f"{setting}: {value} needs a [vault.openbao] section (url, and token or role_id + secret_id) "
            "to read it with; it serves vault: references whatever vault.backend is"
        )
    problem: str | None = None
    try:
        data = kv.read(path)
    except ConfigError as exc:
        problem = exc.detail or str(exc)
    # Raised here, outside the except block: nothing from the client hangs off our error as its __context__.
    if problem is not None:
        raise ConfigError(f"{setting}: cannot read {value}: {problem}")
    if key not in data:
        raise ConfigError(f"{setting}: cannot read {value}: the secret at {path} has no key {key!r}")
    secret = data[key]
    if not isinstance(secret, str):
        raise ConfigError(f"{setting}: {value} is not a string (a {type(secret).__name__}; the value is not shown)")
    if not secret:
        raise ConfigError(f"{setting}: {value} is empty")
    if len(secret.encode("utf-8")) > MAX_SECRET_BYTES:
        raise ConfigError(f"{setting}: {value} is longer than {MAX_SECRET_BYTES} bytes")
    return secret


@final
class _OpenBaoReferences:
    """``KVReader`` over ``[vault.openbao]``, connected on first use (one ``vault.kv.OpenBaoKV``)."""

    __slots__ = ("_reader", "_settings")

    def __init__(self, settings: OpenBaoSettings) -> None:
        self._settings = settings
        self._reader: KVReader | None = None

    def __repr__(self) -> str:
        return f"kv_reader(url={self._settings.url!r})"

    def read(self, path: str) -> Mapping[str, object]:
        if self._reader is None:
            from mcp_bastion.vault.kv import OpenBaoKV  # hvac (and requests) only when a reference needs them

            bao = self._settings
            self._reader = OpenBaoKV(
                url=bao.url,
                token=_optional(bao.token, "vault.openbao.token"),
                role_id=bao.role_id,
                secret_id=_optional(bao.secret_id, "vault.openbao.secret_id"),
                namespace=bao.namespace,
                ca_bundle=bao.ca_bundle,
                timeout=bao.timeout,
                allow_insecure_http=bao.allow_insecure_http,
            )
        return self._reader.read(path)


def _optional(reference: str | None, setting: str) -> str | None:
    return resolve_reference(reference, setting) if reference is not None else None
