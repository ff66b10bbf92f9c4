"""``KeyWrapper`` over OpenBao / HashiCorp Vault Transit (``hvac``): the root key never leaves OpenBao.

The Transit key must be ``aes256-gcm96`` with ``derived=true``: every call sends a ``context`` (a fixed
domain label + the KEK id), from which Transit derives a per-KEK key, so a wrapped KEK copied under another
id does not unwrap. A *non-derived* key silently ignores ``context`` (OpenBao 2.7 answers 200 either way),
which would void that binding: ``ensure_key()`` creates the key correctly and refuses an existing one that
is not (``prepare()`` runs it), and every instance checks the key once before its first wrap or unwrap
(``ConfigError``).
Policy paths an AppRole needs: ``update`` on ``<mount>/datakey/plaintext/<key>``, ``<mount>/decrypt/<key>``,
``<mount>/rewrap/<key>``, and ``read`` on ``<mount>/keys/<key>``; operators also ``create``/``update`` on
``<mount>/keys/<key>``, ``<mount>/keys/<key>/rotate`` and ``<mount>/keys/<key>/config``. Grant nobody
``<mount>/encrypt/<key>``: whoever may encrypt under the key can plant a KEK of their choosing.

hvac is synchronous (``requests``): each call runs in a worker thread, one at a time per instance (a
``threading.Lock``), and the caller waits at most ``timeout`` seconds in all (login, key check, one retry
included); a thread still blocked after that is abandoned and ends on its own socket timeout.

How OpenBao's answers are mapped (observed with OpenBao 2.7)::

    connection refused / reset, DNS, TLS failure, timeout     Unavailable  "cannot connect" / "did not answer"
    503 "Vault is sealed"                                     Unavailable  "sealed"
    5xx, 429, 3xx (redirects are not followed: the token      Unavailable  "answered HTTP ..."
        would travel in a custom header to the new host)
    403 "permission denied" (after one AppRole re-login)      Unavailable  "permission denied on <path>"
    400 "invalid role or secret ID" on AppRole login          Unavailable  "AppRole login refused"
    400 on decrypt/rewrap: "cipher: message authentication    InvalidCiphertext
        failed" (wrong context or flipped byte), "invalid
        ciphertext: no prefix" / "...: could not decode
        base64" / "...: version is too new", "invalid
        ciphertext length", "ciphertext or signature version
        is disallowed by policy (too old)" (below
        min_decryption_version)
    400 "encryption key not found", and any other 400         Unavailable  with OpenBao's message
    404 (engine not mounted at ``mount``, or no such key)      Unavailable  "has no <path>"

Invariants:
- the token, role_id and secret_id never appear in ``repr``, in exception messages, or as an exception's
  cause (errors are raised outside the ``except`` block, so no ``requests`` object carrying the
  ``X-Vault-Token`` header hangs off them);
- malformed wrapped input is refused locally (``InvalidCiphertext``) before any request;
- a result that is not exactly 32 bytes is ``InvalidCiphertext`` on unwrap, ``Unavailable`` on generate;
- ``VAULT_*`` environment variables, ``~/.vault-token``, proxy variables and ``.netrc`` are not consulted
  (token, client certificate, CA, proxy): the configuration given here is the whole story.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final, TypeVar, final
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
import hvac  # type: ignore[import-untyped]
import requests
from hvac import exceptions as bao_errors

from mcp_bastion.errors import ConfigError, Unavailable
from mcp_bastion.vault.envelope import InvalidCiphertext
from mcp_bastion.vault.kek import KEY_BYTES, check_kek_id

T = TypeVar("T")

DEFAULT_TIMEOUT: Final = 5.0
"""Seconds one call (login, key check and one retry included) may take before it is ``Unavailable``."""
KEY_TYPE: Final = "aes256-gcm96"
CONTEXT_LABEL: Final = b"mcp-bastion/vault/kek\x00"
"""Prefix of every Transit ``context``: our derived keys cannot collide with another application's."""
MAX_WRAPPED_BYTES: Final = 512
_WRAPPED: Final = re.compile(rb"vault:v[1-9][0-9]{0,9}:[A-Za-z0-9+/]{4,}={0,2}")
_NAME: Final = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_CIPHERTEXT_ERRORS: Final = (
    "message authentication failed",
    "invalid ciphertext",
    "disallowed by policy (too old)",
)
"""OpenBao's 400 messages on decrypt/rewrap that mean "this wrapped KEK does not open here"."""
_STATUS: Final[dict[type[Exception], str]] = {
    bao_errors.RateLimitExceeded: "HTTP 429 (rate limited)",
    bao_errors.InternalServerError: "HTTP 500",
    bao_errors.VaultNotInitialized: "HTTP 501 (not initialized)",
    bao_errors.BadGateway: "HTTP 502",
    bao_errors.VaultDown: "HTTP 503",
    bao_errors.UnexpectedError: "an unexpected HTTP status (a redirect?)",
}
_RELOGIN_FRACTION: Final = 0.8
"""An AppRole token is replaced after this fraction of its TTL, before OpenBao expires it."""


def _name(value: str, setting: str, *, nested: bool = False) -> str:
    parts = value.split("/") if nested else [value]
    if not all(_NAME.fullmatch(part) and part not in (".", "..") for part in parts):
        raise ConfigError(f"openbao: {setting} {value!r} must be letters, digits, '_', '.', '-'")
    return value


def _check_url(url: str, allow_insecure_http: bool) -> str:
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port  # raises ValueError on a bad port
    except ValueError:
        raise ConfigError("openbao: url is not a valid URL") from None
    if parts.username is not None or parts.password is not None:
        raise ConfigError("openbao: url must not contain credentials")
    if not host or parts.query or parts.fragment:
        raise ConfigError(f"openbao: url {url!r} needs a host and no query or fragment")
    if parts.scheme == "https":
        return url.rstrip("/")
    if parts.scheme != "http":
        raise ConfigError(f"openbao: url {url!r} must be https")
    if not allow_insecure_http:
        raise ConfigError(f"openbao: url {url!r} must be https (allow_insecure_http admits loopback http)")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigError(f"openbao: url {url!r}: plain http is allowed to a loopback address only")
    return url.rstrip("/")


def _context(kek_id: str) -> str:
    return base64.b64encode(CONTEXT_LABEL + check_kek_id(kek_id).encode("ascii")).decode("ascii")


class _Unexpected(Exception):
    """OpenBao answered 2xx with something we cannot use (translated to ``Unavailable``)."""


def _data(response: object) -> dict[str, object]:
    """The ``data`` object of a JSON answer; ``_Unexpected`` if the answer has another shape."""
    data = response.get("data") if isinstance(response, dict) else None
    if not isinstance(data, dict):
        raise _Unexpected("no JSON 'data' object in the answer")
    return data


@final
class OpenBaoTransit:
    """A Transit key that wraps our KEKs. Give ``token``, or ``role_id`` and ``secret_id`` (AppRole)."""

    __slots__ = (
        "_ca_bundle",
        "_client",
        "_closed",
        "_key",
        "_lock",
        "_monotonic",
        "_mount",
        "_relogin_at",
        "_role_id",
        "_secret_id",
        "_static_token",
        "_timeout",
        "_url",
        "_verified",
    )

    def __init__(
        self,
        *,
        url: str,
        key_name: str,
        mount: str = "transit",
        token: str | None = None,
        role_id: str | None = None,
        secret_id: str | None = None,
        ca_bundle: Path | str | None = None,
        namespace: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        allow_insecure_http: bool = False,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = _check_url(url, allow_insecure_http)
        self._key = _name(key_name, "key_name")
        self._mount = _name(mount.strip("/"), "mount", nested=True)
        approle = role_id is not None or secret_id is not None
        if (token is not None) == approle or (approle and not (role_id and secret_id)) or token == "":
            raise ConfigError("openbao: give either token, or role_id and secret_id (AppRole)")
        if not 0 < timeout <= 300:
            raise ConfigError(f"openbao: timeout {timeout!r} must be in (0, 300] seconds")
        if ca_bundle is not None and not Path(ca_bundle).is_file():
            raise ConfigError(f"openbao: ca_bundle {str(ca_bundle)!r} is not a file")
        if namespace is not None:
            _name(namespace.strip("/"), "namespace", nested=True)
        self._static_token = token
        self._role_id = role_id
        self._secret_id = secret_id
        self._ca_bundle = str(ca_bundle) if ca_bundle is not None else None
        self._timeout = timeout
        self._monotonic = monotonic
        self._relogin_at: float | None = None
        self._verified = False
        self._closed = False
        self._lock = threading.Lock()
        session = requests.Session()
        session.trust_env = False  # no proxy variables, .netrc or REQUESTS_CA_BUNDLE: only what is given here
        session.verify = self._ca_bundle if self._ca_bundle is not None else True
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

    @property
    def name(self) -> str:
        return f"openbao-transit:{self._mount}/{self._key}"

    def __repr__(self) -> str:
        auth = "token" if self._static_token is not None else "approle"
        return f"OpenBaoTransit(url={self._url!r}, mount={self._mount!r}, key_name={self._key!r}, auth={auth!r})"

    # -- KeyWrapper ----------------------------------------------------------------------------------------

    async def generate(self, kek_id: str) -> tuple[bytes, bytes]:
        context = _context(kek_id)

        def call() -> tuple[bytes, bytes]:
            data = _data(
                self._client.secrets.transit.generate_data_key(
                    name=self._key, key_type="plaintext", context=context, bits=256, mount_point=self._mount
                )
            )
            plaintext, ciphertext = data.get("plaintext"), data.get("ciphertext")
            if not isinstance(plaintext, str) or not isinstance(ciphertext, str):
                raise _Unexpected("datakey answer without plaintext and ciphertext")
            key = _b64decode(plaintext)
            wrapped = ciphertext.encode("ascii", "replace")
            if key is None or len(key) != KEY_BYTES or not _well_formed(wrapped):
                raise _Unexpected("datakey answer is not a 32-byte key and a Transit ciphertext")
            return key, wrapped

        return await self._call(call, check_key=True)

    async def unwrap(self, wrapped: bytes, kek_id: str) -> bytes:
        context = _context(kek_id)
        if not _well_formed(wrapped):
            raise InvalidCiphertext()

        def call() -> bytes:
            data = _data(
                self._client.secrets.transit.decrypt_data(
                    name=self._key, ciphertext=wrapped.decode("ascii"), context=context, mount_point=self._mount
                )
            )
            plaintext = data.get("plaintext")
            key = _b64decode(plaintext) if isinstance(plaintext, str) else None
            if key is None or len(key) != KEY_BYTES:
                raise InvalidCiphertext()
            return key

        return await self._call(call, check_key=True, ciphertext=True)

    async def rewrap(self, wrapped: bytes, kek_id: str) -> bytes:
        context = _context(kek_id)
        if not _well_formed(wrapped):
            raise InvalidCiphertext()

        def call() -> bytes:
            data = _data(
                self._client.secrets.transit.rewrap_data(
                    name=self._key, ciphertext=wrapped.decode("ascii"), context=context, mount_point=self._mount
                )
            )
            ciphertext = data.get("ciphertext")
            rewrapped = ciphertext.encode("ascii", "replace") if isinstance(ciphertext, str) else b""
            if not _well_formed(rewrapped):
                raise _Unexpected("rewrap answer is not a Transit ciphertext")
            return rewrapped

        return await self._call(call, check_key=True, ciphertext=True)

    async def prepare(self) -> None:
        """``ensure_key()``: with only ``read`` on the key (the gateway's usual policy) this checks it."""
        await self.ensure_key()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._client.adapter.close()

    # -- operators -----------------------------------------------------------------------------------------

    async def ensure_key(self) -> None:
        """Create the Transit key (``aes256-gcm96``, ``derived=true``) if it does not exist; ``ConfigError``
        if it exists with another type or without derivation (``context`` would be ignored)."""

        def call() -> None:
            try:
                self._check_key()
            except bao_errors.InvalidPath:
                self._client.secrets.transit.create_key(
                    name=self._key, key_type=KEY_TYPE, derived=True, mount_point=self._mount
                )
                self._check_key()

        await self._call(call)

    async def rotate_root(self) -> int:
        """Add a version to the Transit key (new wraps use it); returns the new latest version."""

        def call() -> int:
            transit = self._client.secrets.transit
            answer = transit.rotate_key(name=self._key, mount_point=self._mount)
            if not isinstance(answer, dict):  # Vault answers 204; OpenBao 2.x returns the key
                answer = transit.read_key(name=self._key, mount_point=self._mount)
            latest = _data(answer).get("latest_version")
            if not isinstance(latest, int) or isinstance(latest, bool):
                raise _Unexpected("key answer without latest_version")
            return latest

        return await self._call(call)

    async def set_min_decryption_version(self, version: int) -> None:
        """Refuse Transit ciphertexts of versions below ``version`` (after every KEK was re-wrapped)."""
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(f"min_decryption_version {version!r} must be an integer >= 1")

        def call() -> None:
            self._client.secrets.transit.update_key_configuration(
                name=self._key, min_decryption_version=version, mount_point=self._mount
            )

        await self._call(call, refused=ConfigError)

    # -- internals -----------------------------------------------------------------------------------------

    async def _call(
        self,
        call: Callable[[], T],
        *,
        check_key: bool = False,
        ciphertext: bool = False,
        refused: type[ConfigError] | type[Unavailable] = Unavailable,
    ) -> T:
        if self._closed:
            raise RuntimeError(f"{self.name} is closed")

        def run() -> T:
            return self._run(call, check_key, ciphertext, refused)

        try:
            with anyio.fail_after(self._timeout):
                return await anyio.to_thread.run_sync(run, abandon_on_cancel=True)
        except TimeoutError:
            pass
        raise Unavailable(f"{self.name}: {self._url} did not answer within {self._timeout:g} s")

    def _run(
        self,
        call: Callable[[], T],
        check_key: bool,
        ciphertext: bool,
        refused: type[ConfigError] | type[Unavailable],
    ) -> T:
        """In the worker thread: log in if needed, check the key once, call, re-login once on 403."""
        if not self._lock.acquire(timeout=self._timeout):
            raise Unavailable(f"{self.name}: an earlier call to {self._url} is still running")
        try:
            error: Exception
            try:
                return self._authenticated(call, check_key)
            except bao_errors.VaultError as exc:
                error = self._translate(exc, ciphertext, refused)
            except requests.RequestException as exc:
                error = self._connection_error(exc)
            except OSError as exc:  # requests raises a plain OSError for an unreadable CA bundle
                error = Unavailable(f"{self.name}: cannot reach {self._url}: {self._redact(str(exc))[:300]}")
            except _Unexpected as exc:
                error = Unavailable(f"{self.name}: unexpected answer from {self._url}: {exc}")
            # Raised here, outside the except blocks: no hvac/requests exception (whose request carries the
            # X-Vault-Token header) is chained to ours as __context__.
            raise error
        finally:
            self._lock.release()

    def _authenticated(self, call: Callable[[], T], check_key: bool) -> T:
        if self._static_token is None and (self._relogin_at is None or self._monotonic() >= self._relogin_at):
            self._login()
        try:
            if check_key and not self._verified:
                self._check_key()
            return call()
        except (bao_errors.Forbidden, bao_errors.Unauthorized):
            if self._static_token is not None:
                raise
        # An AppRole token that was revoked, used up or expired early: log in again, once.
        self._login()
        if check_key and not self._verified:
            self._check_key()
        return call()

    def _login(self) -> None:
        error: Exception
        try:
            answer = self._client.auth.approle.login(role_id=self._role_id, secret_id=self._secret_id)
        except (bao_errors.InvalidRequest, bao_errors.Forbidden, bao_errors.Unauthorized, bao_errors.InvalidPath):
            error = Unavailable(f"{self.name}: AppRole login refused by {self._url} (role_id or secret_id rejected)")
        else:
            auth = answer.get("auth") if isinstance(answer, dict) else None
            ttl = auth.get("lease_duration") if isinstance(auth, dict) else None
            if not isinstance(ttl, int | float) or isinstance(ttl, bool) or not self._client.token:
                raise _Unexpected("AppRole login answer without a token")
            # lease_duration 0: a token without expiry (then only a 403 makes us log in again).
            self._relogin_at = self._monotonic() + ttl * _RELOGIN_FRACTION if ttl > 0 else float("inf")
            return
        raise error

    def _check_key(self) -> None:
        data = _data(self._client.secrets.transit.read_key(name=self._key, mount_point=self._mount))
        key_type, derived = data.get("type"), data.get("derived")
        if key_type != KEY_TYPE or derived is not True:
            raise ConfigError(
                f"{self.name}: the Transit key is type={key_type!r} derived={derived!r}; it must be "
                f"{KEY_TYPE} with derived=true, or the KEK id binding (Transit context) is not enforced"
            )
        self._verified = True

    def _translate(
        self,
        exc: bao_errors.VaultError,
        ciphertext: bool,
        refused: type[ConfigError] | type[Unavailable],
    ) -> Exception:
        errors = exc.errors if isinstance(exc.errors, list) else []
        message = self._redact("; ".join(str(e).strip() for e in errors))[:300]
        # The path OpenBao answered for (hvac puts the whole URL, never the token, on its exceptions).
        path = urlsplit(exc.url).path if isinstance(exc.url, str) else "?"
        if isinstance(exc, bao_errors.InvalidRequest):
            if ciphertext and any(marker in message for marker in _CIPHERTEXT_ERRORS):
                return InvalidCiphertext()
            return refused(f"{self.name}: {self._url} refused {path}: {message or 'HTTP 400'}")
        if isinstance(exc, bao_errors.Forbidden | bao_errors.Unauthorized):
            return Unavailable(f"{self.name}: permission denied on {path} at {self._url}")
        if isinstance(exc, bao_errors.InvalidPath):
            return Unavailable(
                f"{self.name}: {self._url} has no {path} (Transit is not mounted at {self._mount!r}, "
                "or the key does not exist: see ensure_key)"
            )
        if isinstance(exc, bao_errors.VaultDown) and "sealed" in message.lower():
            return Unavailable(f"{self.name}: {self._url} is sealed")
        status = next((text for kind, text in _STATUS.items() if isinstance(exc, kind)), "an error")
        return Unavailable(f"{self.name}: {self._url} answered {status}" + (f": {message}" if message else ""))

    def _connection_error(self, exc: requests.RequestException) -> Unavailable:
        if isinstance(exc, requests.Timeout):
            return Unavailable(f"{self.name}: {self._url} did not answer within {self._timeout:g} s")
        if isinstance(exc, requests.exceptions.SSLError):
            return Unavailable(f"{self.name}: TLS to {self._url} failed (certificate not trusted? see ca_bundle)")
        if isinstance(exc, requests.ConnectionError):
            return Unavailable(f"{self.name}: cannot connect to {self._url}")
        return Unavailable(f"{self.name}: request to {self._url} failed: {type(exc).__name__}")

    def _redact(self, text: str) -> str:
        for secret in (self._static_token, self._role_id, self._secret_id, self._client.token):
            if secret:
                text = text.replace(secret, "[redacted]")
        return text


def _well_formed(wrapped: bytes) -> bool:
    return isinstance(wrapped, bytes) and len(wrapped) <= MAX_WRAPPED_BYTES and _WRAPPED.fullmatch(wrapped) is not None


def _b64decode(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
