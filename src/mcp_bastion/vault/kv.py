"""Reading secrets from an OpenBao / HashiCorp Vault KV engine (v1 or v2): what ``vault:`` references in the
settings resolve with (``mcp_bastion.secrets``), synchronously, while the gateway is built.

``read("secret/app/db")`` asks ``sys/internal/ui/mounts/secret/app/db`` which engine serves the path (its
mount, which may be nested like ``team/kv/``, and the KV version, as ``bao kv get`` does), then reads
``secret/data/app/db`` (v2: the latest version) or ``kv1/app/db`` (v1). The policy an AppRole needs:
``read`` on ``<mount>/data/<path>`` (v2) or ``<mount>/<path>`` (v1); that grant also opens the mount lookup.

Each secret is read once per instance (one startup): its key/value pairs are kept, so ten references to one
secret cost one request; mounts already seen are not looked up again. Each ``read`` takes at most
``timeout`` seconds in all (AppRole login, mount lookup and read), in a worker thread; a thread still
blocked after that is abandoned and ends on its own socket timeout. Connections are closed after every
``read``: nothing needs closing, nothing lingers once the gateway is built.

Invariants (the connection's are ``vault.baoclient``'s, shared with ``vault.openbao``):
- the token, role_id and secret_id never appear in ``repr`` or in error messages, and errors carry no
  chained exception (made from a ``baoclient.Failure`` and raised in the caller's thread, outside any
  ``except`` block); a secret's values never appear in errors either;
- ``VAULT_*`` environment variables, ``~/.vault-token``, proxy variables and ``.netrc`` are not consulted;
  redirects are not followed (the token would travel to the new host);
- a path is letters, digits and ``_ . - @ + =`` between single slashes (no ``..``, nothing that changes
  the request URL).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Final, final

from mcp_bastion.errors import ConfigError
from mcp_bastion.secrets import is_kv_path
from mcp_bastion.vault.baoclient import DEFAULT_TIMEOUT, BaoClient, Failure, Unexpected, json_object

_MOUNTS_PATH: Final = "sys/internal/ui/mounts/"


class _Refused(Exception):
    """A refusal worded by us (safe to show): becomes the ``ConfigError``'s detail."""


@final
class OpenBaoKV:
    """Reads KV secrets. Give ``token``, or ``role_id`` and ``secret_id`` (AppRole, logged in on first read)."""

    __slots__ = ("_bao", "_cache", "_mounts")

    def __init__(
        self,
        *,
        url: str,
        token: str | None = None,
        role_id: str | None = None,
        secret_id: str | None = None,
        namespace: str | None = None,
        ca_bundle: Path | str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        allow_insecure_http: bool = False,
    ) -> None:
        self._bao = BaoClient(
            url=url,
            token=token,
            role_id=role_id,
            secret_id=secret_id,
            namespace=namespace,
            ca_bundle=ca_bundle,
            timeout=timeout,
            allow_insecure_http=allow_insecure_http,
        )
        self._cache: dict[str, Mapping[str, object]] = {}
        self._mounts: dict[str, int] = {}
        """Mount path (with its trailing slash) -> KV version, as the mount lookup answered."""

    def __repr__(self) -> str:
        return f"OpenBaoKV(url={self._bao.url!r}, auth={self._bao.auth!r})"

    def read(self, path: str) -> Mapping[str, object]:
        """The key/value pairs of the KV secret at ``path`` (``<mount>/<secret>``, the latest version on KV v2).
        ``ConfigError`` (naming the path and OpenBao, never a token or a value) when it cannot be read."""
        if not is_kv_path(path):
            raise ConfigError(f"{path!r} is not <mount>/<path> (letters, digits, '_', '.', '-', '@', '+', '=')")
        cached = self._cache.get(path)
        if cached is not None:
            return cached
        outcome: list[Mapping[str, object] | ConfigError] = []
        worker = threading.Thread(
            target=lambda: outcome.append(self._attempt(path)), name="openbao-kv-read", daemon=True
        )
        worker.start()
        worker.join(self._bao.timeout)
        if not outcome:
            raise ConfigError(self._bao.timed_out().text)
        result = outcome[0]
        if isinstance(result, ConfigError):
            raise result
        self._cache[path] = result
        return result

    # -- in the worker thread ------------------------------------------------------------------------------

    def _attempt(self, path: str) -> Mapping[str, object] | ConfigError:
        """The secret, or the error to raise (returned, not raised: ``read`` raises it outside any ``except``)."""
        try:
            result = self._bao.attempt(lambda: self._fetch(path))
        except _Refused as exc:
            return ConfigError(str(exc))
        except Exception as exc:  # a surprise inside hvac: no thread may die with a traceback
            return ConfigError(f"unexpected error reading {path} at {self._bao.url}: {type(exc).__name__}")
        return self._refusal(result, path) if isinstance(result, Failure) else result

    def _fetch(self, path: str) -> Mapping[str, object]:
        try:
            self._bao.authenticate()
            mount, version = self._mount_of(path)
            secret = path[len(mount) :] if path.startswith(mount) else ""
            if not secret:
                raise _Refused(f"{path} is the KV mount itself at {self._bao.url}: name a secret under it")
            if version == 2:
                data = json_object(json_object(self._get(f"{mount}data/{secret}"), "data"), "data")
            else:
                data = json_object(self._get(f"{mount}{secret}"), "data")
            return MappingProxyType(dict(data))
        finally:
            self._bao.close()  # one startup's reads: no connection is kept open after them

    def _mount_of(self, path: str) -> tuple[str, int]:
        """The KV mount serving ``path`` (with its trailing slash) and its version."""
        known = [mount for mount in self._mounts if f"{path}/".startswith(mount)]
        if known:
            mount = max(known, key=len)
            return mount, self._mounts[mount]
        answer = json_object(self._get(_MOUNTS_PATH + path), "data")
        found, engine, options = answer.get("path"), answer.get("type"), answer.get("options")
        if not isinstance(found, str) or not found.endswith("/") or not f"{path}/".startswith(found):
            raise Unexpected(f"no mount path for {path}")
        if engine not in ("kv", "generic"):
            raise _Refused(f"{found} at {self._bao.url} is a {engine!r} engine, not KV")
        version = options.get("version") if isinstance(options, dict) else None
        self._mounts[found] = 2 if version == "2" else 1
        return found, self._mounts[found]

    def _get(self, api_path: str) -> object:
        return self._bao.client.adapter.get(f"/v1/{api_path}")

    def _refusal(self, failure: Failure, path: str) -> ConfigError:
        """``failure`` in KV's words: a 403 or 404 names the secret, and on the mount lookup it may also mean
        that no KV engine is mounted there."""
        url = self._bao.url
        lookup = failure.path.startswith("/v1/" + _MOUNTS_PATH)
        if failure.kind == "denied" and lookup:
            return ConfigError(f"permission denied on {path} at {url} (or no KV engine is mounted there)")
        if failure.kind == "not_found":
            if lookup:
                return ConfigError(f"no KV engine is mounted at {path} on {url}")
            return ConfigError(f"{url} has no secret at {path} ({failure.path} not found or deleted)")
        return ConfigError(failure.text)
