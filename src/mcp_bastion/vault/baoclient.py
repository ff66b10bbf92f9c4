"""``BaoClient``: one connection to OpenBao / HashiCorp Vault through ``hvac``, shared by ``vault.kv`` (KV reads
for ``vault:`` references) and ``vault.openbao`` (the Transit KEK backend). Its settings are checked here,
its credentials are held only here, and whatever goes wrong is worded here once, without a credential.

``attempt(call)`` runs ``call`` (which uses ``client``) under the connection's lock and returns its result,
or a ``Failure``: a value, not an exception, which each user turns into its own error (``ConfigError``
for ``kv``, ``Unavailable`` for Transit), raised where no hvac or ``requests`` exception is being handled.
How OpenBao's answers become a ``Failure`` (observed with OpenBao 2.7)::

    connection refused / reset, DNS, another requests error   unreachable    "cannot connect to <url>"
    a CA bundle that cannot be read (a plain OSError)         unreachable    "cannot reach <url>: ..."
    TLS failure                                               tls            "TLS to <url> failed ..."
    timeout                                                   timeout        "<url> did not answer within <t> s"
    400, 403 or 404 on AppRole login                          login_refused  "AppRole login refused by <url> ..."
    400                                                       bad_request    "<url> refused <path>: <message>"
    401, 403 "permission denied"                              denied         "permission denied on <path> ..."
    404                                                       not_found      "<url> has no <path>"
    503 "Vault is sealed"                                     sealed         "<url> is sealed"
    5xx, 429, 3xx (redirects are not followed)                status         "<url> answered HTTP ..."
    2xx with an answer we cannot use (``Unexpected``)         unexpected     "unexpected answer from <url>: ..."
    the lock still held by an abandoned earlier call          busy           "an earlier request to <url> ..."

Invariants:
- the token, role_id and secret_id never appear in ``repr`` or in a ``Failure`` (OpenBao's own message,
  quoted in it, is redacted), and a ``Failure`` holds strings only: an error made from it, raised outside
  an ``except`` block, carries no ``requests`` object holding the ``X-Vault-Token`` header;
- ``VAULT_*`` environment variables, ``~/.vault-token``, proxy variables, ``.netrc`` and
  ``REQUESTS_CA_BUNDLE`` are not consulted (token, client certificate, CA, proxy): the settings given here
  are the whole story; redirects are not followed (the token would travel in a custom header to the new host);
- ``url`` is https, or plain http to a loopback host with ``allow_insecure_http``; it carries no
  credentials, query or fragment.
"""

from __future__ import annotations

import ipaddress
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, TypeVar, final
from urllib.parse import urlsplit

import hvac  # type: ignore[import-untyped]
import requests
from hvac import exceptions as bao_errors

from mcp_bastion.errors import ConfigError

T = TypeVar("T")

DEFAULT_TIMEOUT: Final = 5.0
"""Seconds one call to OpenBao (login, and any retry its user makes, included) may take in all."""
MAX_MESSAGE: Final = 300
"""Characters of OpenBao's own message quoted in a ``Failure``."""
_NAME: Final = re.compile(r"[A-Za-z0-9_.-]{1,128}")
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
_LOGIN_REFUSED: Final = (
    bao_errors.InvalidRequest,
    bao_errors.Forbidden,
    bao_errors.Unauthorized,
    bao_errors.InvalidPath,
)
"""hvac's errors for an AppRole login OpenBao refused: 400 "invalid role or secret ID", 403, or 404 (no AppRole)."""

FailureKind = Literal[
    "unreachable",
    "tls",
    "timeout",
    "login_refused",
    "bad_request",
    "denied",
    "not_found",
    "sealed",
    "status",
    "unexpected",
    "busy",
]


@final
@dataclass(frozen=True, slots=True)
class Failure:
    """Why a call to OpenBao did not succeed, in words safe to show (no credential, no secret value)."""

    kind: FailureKind
    text: str
    """The whole message, naming the URL (without a prefix: each user adds its own)."""
    path: str = ""
    """The API path OpenBao answered for (``/v1/...``), when it answered; ``"?"`` if hvac did not say."""
    message: str = ""
    """OpenBao's own message (redacted, at most ``MAX_MESSAGE`` characters), when it gave one."""


class Unexpected(Exception):
    """OpenBao answered 2xx with something we cannot use: ``attempt`` makes it a ``Failure`` (``unexpected``).
    Its message is ours (what was missing), shown after "unexpected answer from <url>: "."""


class _LoginRefused(Exception):
    """Raised by ``login`` outside hvac's ``except`` block, so it has no hvac exception as context."""


def check_name(value: str, setting: str, *, nested: bool = False) -> str:
    """``value`` if it is letters, digits, ``_ . -`` (slash-separated parts when ``nested``, none of them
    ``.`` or ``..``): nothing that changes a request's path; ``ConfigError`` naming ``setting`` if not."""
    parts = value.split("/") if nested else [value]
    if not all(_NAME.fullmatch(part) and part not in (".", "..") for part in parts):
        raise ConfigError(f"openbao: {setting} {value!r} must be letters, digits, '_', '.', '-'")
    return value


def check_url(url: str, allow_insecure_http: bool) -> str:
    """``url`` without a trailing slash, if it is https (or http to a loopback host with
    ``allow_insecure_http``); ``ConfigError`` if not, never quoting credentials found in it."""
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


def json_object(answer: object, field: str) -> dict[str, object]:
    """``answer[field]`` when it is a JSON object; ``Unexpected`` if the answer has another shape."""
    value = answer.get(field) if isinstance(answer, dict) else None
    if not isinstance(value, dict):
        raise Unexpected(f"no JSON {field!r} object")
    return value


@final
class BaoClient:
    """An hvac client to ``url``. Give ``token``, or ``role_id`` and ``secret_id`` (AppRole: logged in by
    ``authenticate``, and again when the token nears the end of its TTL)."""

    __slots__ = (
        "_lock",
        "_monotonic",
        "_relogin_at",
        "_role_id",
        "_secret_id",
        "_static_token",
        "client",
        "timeout",
        "url",
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
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url: Final = check_url(url, allow_insecure_http)
        approle = role_id is not None or secret_id is not None
        if (token is not None) == approle or (approle and not (role_id and secret_id)) or token == "":
            raise ConfigError("openbao: give either token, or role_id and secret_id (AppRole)")
        if not 0 < timeout <= 300:
            raise ConfigError(f"openbao: timeout {timeout!r} must be in (0, 300] seconds")
        if ca_bundle is not None and not Path(ca_bundle).is_file():
            raise ConfigError(f"openbao: ca_bundle {str(ca_bundle)!r} is not a file")
        if namespace is not None:
            check_name(namespace.strip("/"), "namespace", nested=True)
        self.timeout: Final = timeout
        """Seconds a user lets one call take in all; also the socket timeout and the wait for the lock."""
        self._static_token = token
        self._role_id = role_id
        self._secret_id = secret_id
        self._monotonic = monotonic
        self._relogin_at: float | None = None
        self._lock = threading.Lock()
        session = requests.Session()
        session.trust_env = False  # no proxy variables, .netrc or REQUESTS_CA_BUNDLE: only what is given here
        session.verify = str(ca_bundle) if ca_bundle is not None else True
        # token="" and cert=() (not None): hvac would otherwise read VAULT_TOKEN or ~/.vault-token, and
        # VAULT_CLIENT_CERT/VAULT_CLIENT_KEY, from the environment.
        self.client: Final = hvac.Client(
            url=self.url,
            token=token or "",
            cert=(),
            verify=session.verify,
            timeout=timeout,
            allow_redirects=False,
            session=session,
            namespace=namespace,
        )
        """The ``hvac.Client``: use it inside ``attempt`` only (one request at a time, errors translated)."""

    @property
    def auth(self) -> Literal["token", "approle"]:
        return "token" if self._static_token is not None else "approle"

    def __repr__(self) -> str:
        return f"BaoClient(url={self.url!r}, auth={self.auth!r})"

    def attempt(self, call: Callable[[], T]) -> T | Failure:
        """``call()``, or the ``Failure`` that stopped it. Calls are serialised (a ``requests.Session`` is not
        thread-safe; a call abandoned at its deadline may still hold the lock: ``busy`` after ``timeout``).
        Any other exception ``call`` raises (the user's own refusals) passes through.

        Returned, not raised: raising here, inside the ``except`` blocks, would chain hvac's exception (and
        its request, with the token header) to the error as ``__context__``."""
        if not self._lock.acquire(timeout=self.timeout):
            return Failure("busy", f"an earlier request to {self.url} is still running")
        try:
            try:
                return call()
            except bao_errors.VaultError as exc:
                return self._answered(exc)
            except requests.RequestException as exc:  # before OSError, which it subclasses
                return self._not_answered(exc)
            except OSError as exc:  # requests raises a plain OSError for an unreadable CA bundle
                return Failure("unreachable", f"cannot reach {self.url}: {self.redact(str(exc))[:MAX_MESSAGE]}")
            except _LoginRefused:
                return Failure("login_refused", f"AppRole login refused by {self.url} (role_id or secret_id rejected)")
            except Unexpected as exc:
                return Failure("unexpected", f"unexpected answer from {self.url}: {self.redact(str(exc))}")
        finally:
            self._lock.release()

    def timed_out(self) -> Failure:
        """The ``Failure`` for a call its user stopped waiting for after ``timeout`` seconds."""
        return Failure("timeout", f"{self.url} did not answer within {self.timeout:g} s")

    def authenticate(self) -> None:
        """In ``attempt``: with AppRole, log in unless the token we hold still has most of its TTL ahead."""
        if self._static_token is None and (self._relogin_at is None or self._monotonic() >= self._relogin_at):
            self.login()

    def login(self) -> None:
        """In ``attempt``: a new token from the AppRole (also when OpenBao refused the one we held)."""
        refused = False
        answer: object = None
        try:
            answer = self.client.auth.approle.login(role_id=self._role_id, secret_id=self._secret_id)
        except _LOGIN_REFUSED:
            refused = True  # raised below, outside this block: hvac's exception must not be the context
        if refused:
            raise _LoginRefused
        auth = answer.get("auth") if isinstance(answer, dict) else None
        ttl = auth.get("lease_duration") if isinstance(auth, dict) else None
        if not isinstance(ttl, int | float) or isinstance(ttl, bool) or not self.client.token:
            raise Unexpected("AppRole login answer without a token")
        # lease_duration 0: a token without expiry (then only a 403 makes Transit log in again).
        self._relogin_at = self._monotonic() + ttl * _RELOGIN_FRACTION if ttl > 0 else float("inf")

    def close(self) -> None:
        """Close the pooled connections (the next call opens new ones)."""
        self.client.adapter.close()

    def redact(self, text: str) -> str:
        """``text`` with every credential this client holds replaced by ``[redacted]``."""
        for secret in (self._static_token, self._role_id, self._secret_id, self.client.token):
            if secret:
                text = text.replace(secret, "[redacted]")
        return text

    def _answered(self, exc: bao_errors.VaultError) -> Failure:
        errors = exc.errors if isinstance(exc.errors, list) else []
        message = self.redact("; ".join(str(e).strip() for e in errors))[:MAX_MESSAGE]
        # The path OpenBao answered for (hvac puts the whole URL, never the token, on its exceptions).
        path = urlsplit(exc.url).path if isinstance(exc.url, str) else "?"
        if isinstance(exc, bao_errors.InvalidRequest):
            return Failure("bad_request", f"{self.url} refused {path}: {message or 'HTTP 400'}", path, message)
        if isinstance(exc, bao_errors.Forbidden | bao_errors.Unauthorized):
            return Failure("denied", f"permission denied on {path} at {self.url}", path, message)
        if isinstance(exc, bao_errors.InvalidPath):
            return Failure("not_found", f"{self.url} has no {path}", path, message)
        if isinstance(exc, bao_errors.VaultDown) and "sealed" in message.lower():
            return Failure("sealed", f"{self.url} is sealed", path, message)
        status = next((text for kind, text in _STATUS.items() if isinstance(exc, kind)), "an error")
        return Failure("status", f"{self.url} answered {status}" + (f": {message}" if message else ""), path, message)

    def _not_answered(self, exc: requests.RequestException) -> Failure:
        if isinstance(exc, requests.Timeout):
            return self.timed_out()
        if isinstance(exc, requests.exceptions.SSLError):
            return Failure("tls", f"TLS to {self.url} failed (certificate not trusted? see ca_bundle)")
        if isinstance(exc, requests.ConnectionError):
            return Failure("unreachable", f"cannot connect to {self.url}")
        return Failure("unreachable", f"request to {self.url} failed: {type(exc).__name__}")
