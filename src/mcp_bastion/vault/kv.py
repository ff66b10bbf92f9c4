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

Invariants (the same as ``vault.openbao``'s):
- the token, role_id and secret_id never appear in ``repr`` or in error messages, and errors carry no
  chained exception (raised outside the ``except`` blocks: no ``requests`` object holding the
  ``X-Vault-Token`` header hangs off them); a secret's values never appear in errors either;
- ``VAULT_*`` environment variables, ``~/.vault-token``, proxy variables and ``.netrc`` are not consulted;
  redirects are not followed (the token would travel to the new host);
- a path is letters, digits and ``_ . - @ + =`` between single slashes (no ``..``, nothing that changes
  the request URL).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Final, final
from urllib.parse import urlsplit

import hvac  # type: ignore[import-untyped]
import requests
from hvac import exceptions as bao_errors

from mcp_bastion.errors import ConfigError
from mcp_bastion.secrets import is_kv_path
from mcp_bastion.vault.openbao import _STATUS, DEFAULT_TIMEOUT, _check_url

_NAMESPACE: Final = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_MOUNTS_PATH: Final = "sys/internal/ui/mounts/"


class _Refused(Exception):
    """A refusal worded by us (safe to show): becomes the ``ConfigError``'s detail."""


@final
class OpenBaoKV:
    """Reads KV secrets. Give ``token``, or ``role_id`` and ``secret_id`` (AppRole, logged in on first read)."""

    __slots__ = (
        "_cache",
        "_client",
        "_lock",
        "_logged_in",
        "_mounts",
        "_role_id",
        "_secret_id",
        "_static_token",
        "_timeout",
        "_url",
    )

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
        self._url = _check_url(url, allow_insecure_http)
        approle = role_id is not None or secret_id is not None
        if (token is not None) == approle or (approle and not (role_id and secret_id)) or token == "":
            raise ConfigError("openbao: give either token, or role_id and secret_id (AppRole)")
        if not 0 < timeout <= 300:
            raise ConfigError(f"openbao: timeout {timeout!r} must be in (0, 300] seconds")
        if ca_bundle is not None and not Path(ca_bundle).is_file():
            raise ConfigError(f"openbao: ca_bundle {str(ca_bundle)!r} is not a file")
        if namespace is not None and not all(_NAMESPACE.fullmatch(p) for p in namespace.strip("/").split("/")):
            raise ConfigError(f"openbao: namespace {namespace!r} must be letters, digits, '_', '.', '-'")
        self._static_token = token
        self._role_id = role_id
        self._secret_id = secret_id
        self._timeout = timeout
        self._logged_in = token is not None
        self._cache: dict[str, Mapping[str, object]] = {}
        self._mounts: dict[str, int] = {}
        """Mount path (with its trailing slash) -> KV version, as the mount lookup answered."""
        self._lock = threading.Lock()
        session = requests.Session()
        session.trust_env = False  # no proxy variables, .netrc or REQUESTS_CA_BUNDLE: only what is given here
        session.verify = str(ca_bundle) if ca_bundle is not None else True
        # token="" and cert=() (not None): hvac would otherwise read VAULT_TOKEN or ~/.vault-token, and
        # VAULT_CLIENT_CERT/VAULT_CLIENT_KEY, from the environment.
        self._client = hvac.Client(
            url=self._url,
            token=token or "",
            cert=(),
            verify=session.verify,
            timeout=timeout,
            allow_redirects=False,
            session=session,
            namespace=namespace,
        )

    def __repr__(self) -> str:
        auth = "token" if self._static_token is not None else "approle"
        return f"OpenBaoKV(url={self._url!r}, auth={auth!r})"

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
        worker.join(self._timeout)
        if not outcome:
            raise ConfigError(f"{self._url} did not answer within {self._timeout:g} s")
        result = outcome[0]
        if isinstance(result, ConfigError):
            raise result
        self._cache[path] = result
        return result

    # -- in the worker thread ------------------------------------------------------------------------------

    def _attempt(self, path: str) -> Mapping[str, object] | ConfigError:
        """The secret, or the error to raise (returned, not raised: it must not carry hvac's exception)."""
        if not self._lock.acquire(timeout=self._timeout):
            return ConfigError(f"an earlier request to {self._url} is still running")
        try:
            try:
                return self._fetch(path)
            except _Refused as exc:
                return ConfigError(str(exc))
            except bao_errors.VaultError as exc:
                return self._translate(exc, path)
            except requests.RequestException as exc:
                return self._connection_error(exc)
            except OSError as exc:  # requests raises a plain OSError for an unreadable CA bundle
                return ConfigError(f"cannot reach {self._url}: {self._redact(str(exc))[:300]}")
            except Exception as exc:  # a surprise inside hvac: no thread may die with a traceback
                return ConfigError(f"unexpected error reading {path} at {self._url}: {type(exc).__name__}")
        finally:
            self._client.adapter.close()
            self._lock.release()

    def _fetch(self, path: str) -> Mapping[str, object]:
        if not self._logged_in:
            self._login()
        mount, version = self._mount_of(path)
        secret = path[len(mount) :] if path.startswith(mount) else ""
        if not secret:
            raise _Refused(f"{path} is the KV mount itself at {self._url}: name a secret under it")
        if version == 2:
            data = _object(_object(self._get(f"{mount}data/{secret}"), "data"), "data")
        else:
            data = _object(self._get(f"{mount}{secret}"), "data")
        return MappingProxyType(dict(data))

    def _login(self) -> None:
        try:
            answer = self._client.auth.approle.login(role_id=self._role_id, secret_id=self._secret_id)
        except (bao_errors.InvalidRequest, bao_errors.Forbidden, bao_errors.Unauthorized, bao_errors.InvalidPath):
            # Only its text reaches the ConfigError _attempt makes, not this exception or its context.
            raise _Refused(f"AppRole login refused by {self._url} (role_id or secret_id rejected)") from None
        auth = answer.get("auth") if isinstance(answer, dict) else None
        if not isinstance(auth, dict) or not self._client.token:
            raise _Refused(f"unexpected answer from {self._url}: AppRole login answer without a token")
        self._logged_in = True

    def _mount_of(self, path: str) -> tuple[str, int]:
        """The KV mount serving ``path`` (with its trailing slash) and its version."""
        known = [mount for mount in self._mounts if f"{path}/".startswith(mount)]
        if known:
            mount = max(known, key=len)
            return mount, self._mounts[mount]
        answer = _object(self._get(_MOUNTS_PATH + path), "data")
        found, engine, options = answer.get("path"), answer.get("type"), answer.get("options")
        if not isinstance(found, str) or not found.endswith("/") or not f"{path}/".startswith(found):
            raise _Refused(f"unexpected answer from {self._url}: no mount path for {path}")
        if engine not in ("kv", "generic"):
            raise _Refused(f"{found} at {self._url} is a {engine!r} engine, not KV")
        version = options.get("version") if isinstance(options, dict) else None
        self._mounts[found] = 2 if version == "2" else 1
        return found, self._mounts[found]

    def _get(self, api_path: str) -> object:
        return self._client.adapter.get(f"/v1/{api_path}")

    def _translate(self, exc: bao_errors.VaultError, path: str) -> ConfigError:
        errors = exc.errors if isinstance(exc.errors, list) else []
        message = self._redact("; ".join(str(e).strip() for e in errors))[:300]
        # The path OpenBao answered for (hvac puts the whole URL, never the token, on its exceptions).
        api_path = urlsplit(exc.url).path if isinstance(exc.url, str) else "?"
        lookup = api_path.startswith("/v1/" + _MOUNTS_PATH)
        if isinstance(exc, bao_errors.Forbidden | bao_errors.Unauthorized):
            if lookup:
                return ConfigError(f"permission denied on {path} at {self._url} (or no KV engine is mounted there)")
            return ConfigError(f"permission denied on {api_path} at {self._url}")
        if isinstance(exc, bao_errors.InvalidPath):
            if lookup:
                return ConfigError(f"no KV engine is mounted at {path} on {self._url}")
            return ConfigError(f"{self._url} has no secret at {path} ({api_path} not found or deleted)")
        if isinstance(exc, bao_errors.VaultDown) and "sealed" in message.lower():
            return ConfigError(f"{self._url} is sealed")
        if isinstance(exc, bao_errors.InvalidRequest):
            return ConfigError(f"{self._url} refused {api_path}: {message or 'HTTP 400'}")
        status = next((text for kind, text in _STATUS.items() if isinstance(exc, kind)), "an error")
        return ConfigError(f"{self._url} answered {status}" + (f": {message}" if message else ""))

    def _connection_error(self, exc: requests.RequestException) -> ConfigError:
        if isinstance(exc, requests.Timeout):
            return ConfigError(f"{self._url} did not answer within {self._timeout:g} s")
        if isinstance(exc, requests.exceptions.SSLError):
            return ConfigError(f"TLS to {self._url} failed (certificate not trusted? see ca_bundle)")
        if isinstance(exc, requests.ConnectionError):
            return ConfigError(f"cannot connect to {self._url}")
        return ConfigError(f"request to {self._url} failed: {type(exc).__name__}")

    def _redact(self, text: str) -> str:
        for secret in (self._static_token, self._role_id, self._secret_id, self._client.token):
            if secret:
                text = text.replace(secret, "[redacted]")
        return text


def _object(answer: object, field: str) -> dict[str, object]:
    """``answer[field]`` when it is a JSON object; ``_Refused`` if the answer has another shape."""
    value = answer.get(field) if isinstance(answer, dict) else None
    if not isinstance(value, dict):
        raise _Refused(f"unexpected answer from OpenBao: no JSON {field!r} object")
    return value
