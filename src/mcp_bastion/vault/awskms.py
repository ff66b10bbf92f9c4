"""``AwsKms``: the ``KeyWrapper`` over an AWS KMS symmetric key (``GenerateDataKey``, ``Decrypt``, ``ReEncrypt``).

Every call carries the encryption context ``{"purpose": "mcp-bastion-kek", "kek_id": <id>}`` (KMS binds it to
the ciphertext as additional authenticated data), so a wrapped KEK copied under another id does not unwrap;
``Decrypt`` and ``ReEncrypt`` pin the key (``KeyId`` / ``SourceKeyId``), so a blob wrapped by any other KMS
key, even one we may use, is refused instead of silently accepted.

boto3 is synchronous: each call runs in a worker thread (``anyio.to_thread.run_sync``) under an overall
deadline of ``timeout`` seconds; botocore's own connect and read timeouts are ``timeout`` too, and it makes
at most ``MAX_ATTEMPTS`` attempts (standard retry mode: throttling, 5xx and connection errors are retried
with jittered backoff). A call abandoned at the deadline finishes in its thread, bounded by those timeouts.

Failures are translated at this boundary:

- ``InvalidCiphertextException`` / ``IncorrectKeyException`` (wrong context, foreign key, bytes changed),
  a plaintext that is not 32 bytes, a blob outside KMS's 1..6144 bytes, and a ``ReEncrypt`` whose source
  key is not ours -> ``InvalidCiphertext`` (opaque, no cause attached);
- anything else, from the network (unreachable, timed out) or from KMS (``AccessDeniedException``,
  ``DisabledException``, ``KMSInvalidStateException`` for a key pending deletion, ``NotFoundException``,
  throttling after the retries, bad credentials) -> ``Unavailable``, whose detail names the operation,
  the key and the region and the error *code* only: never credentials, never KMS's free-text message.

Neither is chained to the botocore exception (no ``__cause__``, no ``__context__``): some of those hold the
signed request, whose headers carry the access key id and the session token.

The endpoint is AWS's regional one unless ``endpoint_url`` names another (a VPC endpoint, or a test
server): https, or plain http to a loopback IP literal when ``allow_insecure_http`` is set. Endpoints
configured outside our settings (``AWS_ENDPOINT_URL*`` variables, ``endpoint_url`` in ``~/.aws/config``)
are ignored, so nothing but our own checked setting can send KEKs over plain http. Credentials are the
explicit ``access_key_id``/``secret_access_key``/``session_token`` when given, else boto3's default chain
(environment, shared files, container or instance role).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar, final
from urllib.parse import urlsplit

import anyio
import boto3
import botocore.exceptions
from botocore.config import Config

from mcp_bastion.errors import ConfigError, Unavailable
from mcp_bastion.vault.envelope import InvalidCiphertext
from mcp_bastion.vault.kek import KEY_BYTES, check_kek_id

if TYPE_CHECKING:
    from mypy_boto3_kms import KMSClient

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT: Final = 5.0
"""Seconds one call may take in all, and botocore's connect and read timeouts per attempt."""
MAX_ATTEMPTS: Final = 3
"""The first attempt and at most two retries (botocore standard retry mode)."""
PURPOSE: Final = "mcp-bastion-kek"
"""The ``purpose`` entry of every encryption context: these ciphertexts are KEKs of mcp-bastion."""
MAX_CIPHERTEXT_BYTES: Final = 6144
"""KMS's limit on ``CiphertextBlob``; anything longer cannot be a KMS ciphertext."""
_NOT_AUTHENTIC: Final = frozenset({"InvalidCiphertextException", "IncorrectKeyException"})
"""KMS error codes that mean "this blob is not a KEK wrapped by our key for this id"."""

_T = TypeVar("_T")


def _check_endpoint(endpoint_url: str, *, allow_insecure_http: bool) -> None:
    """https with a host, or http to a loopback IP literal with ``allow_insecure_http``; ``ConfigError`` if not."""
    problem = "must be https (plain http only to a loopback IP literal with allow_insecure_http)"
    try:
        parts = urlsplit(endpoint_url)
        hostname = parts.hostname
        _ = parts.port  # raises ValueError for a port that is not a number
    except ValueError:
        raise ConfigError("vault.aws_kms.endpoint_url: not a URL") from None
    if not hostname or parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        # Not echoed: a URL with user:password@ in it would put that password into the log.
        raise ConfigError("vault.aws_kms.endpoint_url: needs a host, and no credentials, query or fragment")
    if parts.scheme == "https":
        return
    if parts.scheme == "http" and allow_insecure_http:
        try:
            loopback = ipaddress.ip_address(hostname).is_loopback
        except ValueError:
            loopback = False  # a host name resolves later, anywhere; only a literal is known to stay local
        if loopback:
            logger.warning("AWS KMS over plain http at %s (allow_insecure_http)", endpoint_url)
            return
    raise ConfigError(f"vault.aws_kms.endpoint_url {endpoint_url!r}: {problem}")


def _context(kek_id: str) -> dict[str, str]:
    return {"purpose": PURPOSE, "kek_id": check_kek_id(kek_id)}


def _check_blob(wrapped: bytes) -> None:
    if not 1 <= len(wrapped) <= MAX_CIPHERTEXT_BYTES:
        raise InvalidCiphertext()


@final
class AwsKms:
    """A KMS symmetric key (id, ARN, alias name or alias ARN) that wraps our 32-byte KEKs."""

    __slots__ = ("_client", "_key_id", "_region", "_timeout")

    def __init__(
        self,
        *,
        key_id: str,
        region: str,
        endpoint_url: str | None = None,
        allow_insecure_http: bool = False,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if not key_id or len(key_id) > 2048 or not key_id.isprintable() or any(c.isspace() for c in key_id):
            raise ConfigError(f"vault.aws_kms.key_id {key_id!r}: a key id, key ARN, alias name or alias ARN")
        if not region or len(region) > 64 or not all(c.isalnum() or c == "-" for c in region):
            raise ConfigError(f"vault.aws_kms.region {region!r}: an AWS region such as 'eu-west-1'")
        if not timeout > 0:
            raise ConfigError(f"vault.aws_kms.timeout {timeout!r}: must be a positive number of seconds")
        if (access_key_id is None) != (secret_access_key is None):
            raise ConfigError("vault.aws_kms: access_key_id and secret_access_key go together (or neither)")
        if session_token is not None and access_key_id is None:
            raise ConfigError("vault.aws_kms: session_token needs access_key_id and secret_access_key")
        if endpoint_url is not None:
            _check_endpoint(endpoint_url, allow_insecure_http=allow_insecure_http)
        self._key_id = key_id
        self._region = region
        self._timeout = timeout
        # A session of our own: boto3's default session is global state shared with anything else in the
        # process. The credentials end up in the client's request signer, never in an attribute of ours.
        session = boto3.session.Session(
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            aws_session_token=session_token,
            region_name=region,
        )
        options: dict[str, Any] = {
            "connect_timeout": timeout,
            "read_timeout": timeout,
            "retries": {"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
            # Only our checked endpoint_url may redirect KMS traffic (not AWS_ENDPOINT_URL* or ~/.aws/config).
            "ignore_configured_endpoint_urls": True,
            "user_agent_extra": "mcp-bastion",
        }
        self._client: KMSClient = session.client("kms", endpoint_url=endpoint_url, config=Config(**options))

    @property
    def name(self) -> str:
        return f"aws-kms:{self._region}/{self._key_id}"

    def __repr__(self) -> str:
        return f"AwsKms({self.name!r})"

    async def generate(self, kek_id: str) -> tuple[bytes, bytes]:
        context = _context(kek_id)
        response = await self._call(
            "GenerateDataKey",
            lambda: self._client.generate_data_key(KeyId=self._key_id, KeySpec="AES_256", EncryptionContext=context),
        )
        plaintext, wrapped = response.get("Plaintext", b""), response.get("CiphertextBlob", b"")
        if len(plaintext) != KEY_BYTES or not 1 <= len(wrapped) <= MAX_CIPHERTEXT_BYTES:
            raise Unavailable(f"{self.name}: GenerateDataKey answered without a 32-byte key and its ciphertext")
        return plaintext, wrapped

    async def unwrap(self, wrapped: bytes, kek_id: str) -> bytes:
        context = _context(kek_id)
        _check_blob(wrapped)
        response = await self._call(
            "Decrypt",
            lambda: self._client.decrypt(CiphertextBlob=wrapped, EncryptionContext=context, KeyId=self._key_id),
            authentic=True,
        )
        plaintext = response.get("Plaintext", b"")
        if len(plaintext) != KEY_BYTES:
            # Authentic, but not one of our KEKs (e.g. an AES_128 data key under the same context).
            raise InvalidCiphertext()
        return plaintext

    async def rewrap(self, wrapped: bytes, kek_id: str) -> bytes:
        context = _context(kek_id)
        _check_blob(wrapped)
        response = await self._call(
            "ReEncrypt",
            lambda: self._client.re_encrypt(
                CiphertextBlob=wrapped,
                SourceKeyId=self._key_id,
                SourceEncryptionContext=context,
                DestinationKeyId=self._key_id,
                DestinationEncryptionContext=context,
            ),
            authentic=True,
        )
        source, destination = response.get("SourceKeyId"), response.get("KeyId")
        rewrapped = response.get("CiphertextBlob", b"")
        if not source or not destination or not 1 <= len(rewrapped) <= MAX_CIPHERTEXT_BYTES:
            raise Unavailable(f"{self.name}: ReEncrypt answered without the key ARNs and the new ciphertext")
        if source != destination:
            # Both are key ARNs as KMS reports them. KMS refuses a foreign SourceKeyId itself; this check does
            # not depend on that (moto, for one, ignores SourceKeyId), so a blob of another key never becomes ours.
            raise InvalidCiphertext()
        return rewrapped

    async def prepare(self) -> None:
        """Nothing to create: the KMS key is the operator's (its policy decides what we may do with it)."""

    async def aclose(self) -> None:
        self._client.close()

    async def _call(self, operation: str, call: Callable[[], _T], *, authentic: bool = False) -> _T:
        """Run ``call`` in a worker thread within the deadline, translating every failure.

        ``authentic``: the call checks a ciphertext, so KMS's "does not authenticate" codes mean
        ``InvalidCiphertext``; for other calls they are as unexpected as any other refusal.
        """
        # Every error is raised after the ``except`` block, with neither cause nor context: botocore's
        # ConnectionClosedError holds the signed request, whose headers carry the access key id and the
        # session token, and nothing of that may hang off an exception that gets logged.
        failure: Exception
        try:
            with anyio.fail_after(self._timeout):
                return await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
        except TimeoutError:
            failure = Unavailable(f"{self.name}: {operation} got no answer within {self._timeout:g} s")
        except botocore.exceptions.ClientError as exc:
            code = _error_code(exc.response)
            if authentic and code in _NOT_AUTHENTIC:
                failure = InvalidCiphertext()
            else:
                failure = Unavailable(f"{self.name}: {operation} refused: {code}")
        except botocore.exceptions.BotoCoreError as exc:
            # Connection refused or closed, timeouts after the retries, no credentials found. The class name
            # and our endpoint only: some botocore messages quote request parameters.
            endpoint = self._client.meta.endpoint_url
            failure = Unavailable(f"{self.name}: {operation} via {endpoint} failed: {type(exc).__name__}")
        raise failure


def _error_code(response: Mapping[str, object]) -> str:
    error = response.get("Error")
    code = error.get("Code") if isinstance(error, Mapping) else None
    return code if isinstance(code, str) and code.isidentifier() else "unknown error"
