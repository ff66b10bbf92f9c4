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

The connection is a ``vault.baoclient.BaoClient`` (shared with ``vault.kv``: settings checks, AppRole login,
error wording, credential hiding). hvac is synchronous (``requests``): each call runs in a worker thread, one
at a time per instance (the client's lock), and the caller waits at most ``timeout`` seconds in all (login,
key check, one retry included); a thread still blocked after that is abandoned and ends on its own socket
timeout.

How OpenBao's answers are mapped (observed with OpenBao 2.7; the words are ``baoclient``'s ``Failure`` texts)::

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

Invariants (the first and last are ``BaoClient``'s):
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
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final, TypeVar, final

import anyio
import anyio.to_thread
from hvac import exceptions as bao_errors  # type: ignore[import-untyped]

from mcp_bastion.errors import ConfigError, Unavailable
from mcp_bastion.vault.baoclient import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
from mcp_bastion.vault.baoclient import BaoClient, Failure, Unexpected, check_name, json_object
from mcp_bastion.vault.envelope import InvalidCiphertext
from mcp_bastion.vault.kek import KEY_BYTES, check_kek_id

T = TypeVar("T")

KEY_TYPE: Final = "aes256-gcm96"
CONTEXT_LABEL: Final = b"mcp-bastion/vault/kek\x00"
"""Prefix of every Transit ``context``: our derived keys cannot collide with another application's."""
MAX_WRAPPED_BYTES: Final = 512
_WRAPPED: Final = re.compile(rb"vault:v[1-9][0-9]{0,9}:[A-Za-z0-9+/]{4,}={0,2}")
_CIPHERTEXT_ERRORS: Final = (
    "message authentication failed",
    "invalid ciphertext",
    "disallowed by policy (too old)",
)
"""OpenBao's 400 messages on decrypt/rewrap that mean "this wrapped KEK does not open here"."""


def _context(kek_id: str) -> str:
    return base64.b64encode(CONTEXT_LABEL + check_kek_id(kek_id).encode("ascii")).decode("ascii")


@final
class OpenBaoTransit:
    """A Transit key that wraps our KEKs. Give ``token``, or ``role_id`` and ``secret_id`` (AppRole)."""

    __slots__ = ("_bao", "_closed", "_key", "_mount", "_verified")

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
        self._bao = BaoClient(
            url=url,
            token=token,
            role_id=role_id,
            secret_id=secret_id,
            namespace=namespace,
            ca_bundle=ca_bundle,
            timeout=timeout,
            allow_insecure_http=allow_insecure_http,
            monotonic=monotonic,
        )
        self._key = check_name(key_name, "key_name")
        self._mount = check_name(mount.strip("/"), "mount", nested=True)
        self._verified = False
        self._closed = False

    @property
    def name(self) -> str:
        return f"openbao-transit:{self._mount}/{self._key}"

    def __repr__(self) -> str:
        return (
            f"OpenBaoTransit(url={self._bao.url!r}, mount={self._mount!r}, key_name={self._key!r}, "
            f"auth={self._bao.auth!r})"
        )

    # -- KeyWrapper ----------------------------------------------------------------------------------------

    async def generate(self, kek_id: str) -> tuple[bytes, bytes]:
        context = _context(kek_id)

        def call() -> tuple[bytes, bytes]:
            answer = self._bao.client.secrets.transit.generate_data_key(
                name=self._key, key_type="plaintext", context=context, bits=256, mount_point=self._mount
            )
            data = json_object(answer, "data")
            plaintext, ciphertext = data.get("plaintext"), data.get("ciphertext")
            if not isinstance(plaintext, str) or not isinstance(ciphertext, str):
                raise Unexpected("datakey answer without plaintext and ciphertext")
            key = _b64decode(plaintext)
            wrapped = ciphertext.encode("ascii", "replace")
            if key is None or len(key) != KEY_BYTES or not _well_formed(wrapped):
                raise Unexpected("datakey answer is not a 32-byte key and a Transit ciphertext")
            return key, wrapped

        return await self._call(call, check_key=True)

    async def unwrap(self, wrapped: bytes, kek_id: str) -> bytes:
        context = _context(kek_id)
        if not _well_formed(wrapped):
            raise InvalidCiphertext()

        def call() -> bytes:
            answer = self._bao.client.secrets.transit.decrypt_data(
                name=self._key, ciphertext=wrapped.decode("ascii"), context=context, mount_point=self._mount
            )
            data = json_object(answer, "data")
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
            answer = self._bao.client.secrets.transit.rewrap_data(
                name=self._key, ciphertext=wrapped.decode("ascii"), context=context, mount_point=self._mount
            )
            data = json_object(answer, "data")
            ciphertext = data.get("ciphertext")
            rewrapped = ciphertext.encode("ascii", "replace") if isinstance(ciphertext, str) else b""
            if not _well_formed(rewrapped):
                raise Unexpected("rewrap answer is not a Transit ciphertext")
            return rewrapped

        return await self._call(call, check_key=True, ciphertext=True)

    async def prepare(self) -> None:
        """``ensure_key()``: with only ``read`` on the key (the gateway's usual policy) this checks it."""
        await self.ensure_key()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._bao.close()

    # -- operators -----------------------------------------------------------------------------------------

    async def ensure_key(self) -> None:
        """Create the Transit key (``aes256-gcm96``, ``derived=true``) if it does not exist; ``ConfigError``
        if it exists with another type or without derivation (``context`` would be ignored)."""

        def call() -> None:
            try:
                self._check_key()
            except bao_errors.InvalidPath:
                self._bao.client.secrets.transit.create_key(
                    name=self._key, key_type=KEY_TYPE, derived=True, mount_point=self._mount
                )
                self._check_key()

        await self._call(call)

    async def rotate_root(self) -> int:
        """Add a version to the Transit key (new wraps use it); returns the new latest version."""

        def call() -> int:
            transit = self._bao.client.secrets.transit
            answer = transit.rotate_key(name=self._key, mount_point=self._mount)
            if not isinstance(answer, dict):  # Vault answers 204; OpenBao 2.x returns the key
                answer = transit.read_key(name=self._key, mount_point=self._mount)
            latest = json_object(answer, "data").get("latest_version")
            if not isinstance(latest, int) or isinstance(latest, bool):
                raise Unexpected("key answer without latest_version")
            return latest

        return await self._call(call)

    async def set_min_decryption_version(self, version: int) -> None:
        """Refuse Transit ciphertexts of versions below ``version`` (after every KEK was re-wrapped)."""
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(f"min_decryption_version {version!r} must be an integer >= 1")

        def call() -> None:
            self._bao.client.secrets.transit.update_key_configuration(
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
            with anyio.fail_after(self._bao.timeout):
                return await anyio.to_thread.run_sync(run, abandon_on_cancel=True)
        except TimeoutError:
            pass
        raise Unavailable(f"{self.name}: {self._bao.timed_out().text}")

    def _run(
        self,
        call: Callable[[], T],
        check_key: bool,
        ciphertext: bool,
        refused: type[ConfigError] | type[Unavailable],
    ) -> T:
        """In the worker thread: log in if needed, check the key once, call, re-login once on 403."""
        result = self._bao.attempt(lambda: self._authenticated(call, check_key))
        if isinstance(result, Failure):
            # Raised here, outside any except block: no hvac/requests exception (whose request carries the
            # X-Vault-Token header) is chained to ours as __context__.
            raise self._error(result, ciphertext, refused)
        return result

    def _authenticated(self, call: Callable[[], T], check_key: bool) -> T:
        self._bao.authenticate()
        try:
            if check_key and not self._verified:
                self._check_key()
            return call()
        except (bao_errors.Forbidden, bao_errors.Unauthorized):
            if self._bao.auth == "token":
                raise
        # An AppRole token that was revoked, used up or expired early: log in again, once.
        self._bao.login()
        if check_key and not self._verified:
            self._check_key()
        return call()

    def _check_key(self) -> None:
        key = self._bao.client.secrets.transit.read_key(name=self._key, mount_point=self._mount)
        data = json_object(key, "data")
        key_type, derived = data.get("type"), data.get("derived")
        if key_type != KEY_TYPE or derived is not True:
            raise ConfigError(
                f"{self.name}: the Transit key is type={key_type!r} derived={derived!r}; it must be "
                f"{KEY_TYPE} with derived=true, or the KEK id binding (Transit context) is not enforced"
            )
        self._verified = True

    def _error(
        self,
        failure: Failure,
        ciphertext: bool,
        refused: type[ConfigError] | type[Unavailable],
    ) -> Exception:
        """``failure`` in Transit's terms: a 400 on decrypt/rewrap may say the wrapped KEK does not open."""
        if failure.kind == "bad_request":
            if ciphertext and any(marker in failure.message for marker in _CIPHERTEXT_ERRORS):
                return InvalidCiphertext()
            return refused(f"{self.name}: {failure.text}")
        if failure.kind == "not_found":
            return Unavailable(
                f"{self.name}: {failure.text} (Transit is not mounted at {self._mount!r}, "
                "or the key does not exist: see ensure_key)"
            )
        return Unavailable(f"{self.name}: {failure.text}")


def _well_formed(wrapped: bytes) -> bool:
    return isinstance(wrapped, bytes) and len(wrapped) <= MAX_WRAPPED_BYTES and _WRAPPED.fullmatch(wrapped) is not None


def _b64decode(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
