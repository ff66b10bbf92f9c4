"""``AwsKms`` against a real ``moto_server`` on 127.0.0.1, plus botocore's ``Stubber`` for what moto never says.

What moto 5.2 enforces, checked here rather than assumed (its blob is ``key-id (36 ASCII) || IV (12) ||
AES-GCM ciphertext || tag (16)``, the encryption context serialised into the associated data):

- ``Decrypt`` / ``ReEncrypt`` check the encryption context (GCM associated data): enforced;
- ``Decrypt`` with a pinned ``KeyId`` refuses a blob of another key, but with ``AccessDeniedException`` where
  AWS answers ``IncorrectKeyException``, so here the refusal surfaces as ``Unavailable``, not
  ``InvalidCiphertext``; a blob whose key-id header was changed or names no key gets ``AccessDeniedException``
  too (AWS: ``InvalidCiphertextException``);
- ``ReEncrypt`` ignores ``SourceKeyId``: a foreign blob is re-encrypted under our key. ``AwsKms`` refuses it
  by comparing the source and destination key ARNs of the answer (tested below);
- disabled keys and keys pending deletion keep working for every cryptographic call (no ``DisabledException``
  or ``KMSInvalidStateException``), and ``RotateKeyOnDemand`` only records the rotation, it does not change
  the key material: those code paths are tested with the ``Stubber`` (a real botocore client whose answers
  are given), and the rotation test can only show that rewrapping after a rotation still round-trips;
- moto accepts any credentials and keeps its keys in memory: after a restart every key is gone, so "the
  service came back" is testable (the same ``AwsKms`` recovers) but "the keys survived" is not.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import aclosing
from pathlib import Path
from typing import TYPE_CHECKING, Final

import anyio
import anyio.abc
import boto3
import pytest
from botocore.stub import Stubber

from mcp_bastion.errors import ConfigError, Unavailable
from mcp_bastion.vault.awskms import PURPOSE, AwsKms
from mcp_bastion.vault.envelope import InvalidCiphertext
from tests.helpers.moto import MotoServer, moto_server

if TYPE_CHECKING:
    from mypy_boto3_kms import KMSClient

pytestmark = pytest.mark.anyio

REGION: Final = "eu-west-1"
ACCESS_KEY_ID: Final = "AKIAMCPBASTIONTEST01"
SECRET_ACCESS_KEY: Final = "s3cr3t-mcp-bastion-test-secret-access-key"
SESSION_TOKEN: Final = "mcp-bastion-test-session-token"
SECRETS: Final = (ACCESS_KEY_ID, SECRET_ACCESS_KEY, SESSION_TOKEN)
BOUND: Final = 15.0
"""Seconds any single test step may take (a dead server costs at most 3 attempts plus ~3 s of backoff)."""
MOTO_KEY_ID_BYTES: Final = 36
"""moto's ciphertext starts with the key's UUID in ASCII (not authenticated: a change there is 'no such key')."""


@pytest.fixture(autouse=True)
def no_ambient_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Nothing from the developer's environment or ~/.aws reaches boto3: only what the tests pass."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with moto_server(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture
def own_moto(tmp_path: Path) -> Iterator[MotoServer]:
    """A server of the test's own, for tests that stop and restart it."""
    with moto_server(tmp_path / "moto") as server:
        yield server


def admin_client(server: MotoServer) -> KMSClient:
    """A plain boto3 client, as an operator's tooling would use, to create and change keys."""
    return boto3.session.Session().client(
        "kms",
        region_name=REGION,
        endpoint_url=server.url,
        aws_access_key_id="admin",
        aws_secret_access_key="admin",
    )


@pytest.fixture(scope="module")
def admin(moto: MotoServer) -> Iterator[KMSClient]:
    client = admin_client(moto)
    yield client
    client.close()


def new_key(admin: KMSClient) -> str:
    return admin.create_key(Description="mcp-bastion test")["KeyMetadata"]["KeyId"]


def make_kms(server: MotoServer | str, key_id: str, *, timeout: float = 5.0) -> AwsKms:
    return AwsKms(
        key_id=key_id,
        region=REGION,
        endpoint_url=server if isinstance(server, str) else server.url,
        allow_insecure_http=True,
        access_key_id=ACCESS_KEY_ID,
        secret_access_key=SECRET_ACCESS_KEY,
        session_token=SESSION_TOKEN,
        timeout=timeout,
    )


@pytest.fixture
def key_id(admin: KMSClient) -> str:
    return new_key(admin)


@pytest.fixture
async def kms(moto: MotoServer, key_id: str) -> AsyncIterator[AwsKms]:
    async with aclosing(make_kms(moto, key_id)) as kms:
        yield kms


def context(kek_id: str) -> dict[str, str]:
    return {"purpose": PURPOSE, "kek_id": kek_id}


def all_calls(kms: AwsKms, wrapped: bytes) -> list[Callable[[], Awaitable[object]]]:
    """Each method of the protocol, ready to call."""
    return [lambda: kms.generate("kms-1"), lambda: kms.unwrap(wrapped, "kms-1"), lambda: kms.rewrap(wrapped, "kms-1")]


def flipped(blob: bytes, position: int) -> bytes:
    changed = bytearray(blob)
    changed[position] ^= 0x01
    return bytes(changed)


# --- round trips ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["id", "arn", "alias", "alias-arn"])
async def test_generate_then_unwrap(moto: MotoServer, admin: KMSClient, key_id: str, form: str) -> None:
    metadata = admin.describe_key(KeyId=key_id)["KeyMetadata"]
    admin.create_alias(AliasName=f"alias/bastion-{key_id}", TargetKeyId=key_id)
    name = {
        "id": key_id,
        "arn": metadata["Arn"],
        "alias": f"alias/bastion-{key_id}",
        "alias-arn": metadata["Arn"].replace(f":key/{key_id}", f":alias/bastion-{key_id}"),
    }[form]
    async with aclosing(make_kms(moto, name)) as kms:
        with anyio.fail_after(BOUND):
            kek, wrapped = await kms.generate("kms-1")
            other_kek, _ = await kms.generate("kms-1")
            assert len(kek) == 32
            assert kek != other_kek
            assert kek not in wrapped
            assert await kms.unwrap(wrapped, "kms-1") == kek
        assert kms.name == f"aws-kms:{REGION}/{name}"


async def test_generate_binds_purpose_and_kek_id(admin: KMSClient, key_id: str, kms: AwsKms) -> None:
    """The context KMS stored is exactly ours: an operator's own Decrypt needs both entries."""
    kek, wrapped = await kms.generate("kms-7")
    assert admin.decrypt(CiphertextBlob=wrapped, KeyId=key_id, EncryptionContext=context("kms-7"))["Plaintext"] == kek
    with pytest.raises(admin.exceptions.InvalidCiphertextException):
        admin.decrypt(CiphertextBlob=wrapped, KeyId=key_id, EncryptionContext={"kek_id": "kms-7"})


# --- what does not unwrap ------------------------------------------------------------------------------------


async def test_unwrap_under_another_kek_id_fails(kms: AwsKms) -> None:
    # moto enforces the encryption context (it is the GCM associated data), as AWS does.
    _, wrapped = await kms.generate("kms-1")
    with pytest.raises(InvalidCiphertext):
        await kms.unwrap(wrapped, "kms-2")


@pytest.mark.parametrize(
    "foreign_context",
    [
        pytest.param({"kek_id": "kms-1"}, id="no-purpose"),
        pytest.param({"purpose": "something-else", "kek_id": "kms-1"}, id="other-purpose"),
        pytest.param({}, id="no-context"),
        pytest.param({**context("kms-1"), "extra": "x"}, id="extra-entry"),
    ],
)
async def test_blob_wrapped_for_another_purpose_fails(
    admin: KMSClient, key_id: str, kms: AwsKms, foreign_context: dict[str, str]
) -> None:
    """Same key, same kek_id, but a context that is not exactly ours: another application's data key."""
    wrapped = admin.generate_data_key(KeyId=key_id, KeySpec="AES_256", EncryptionContext=foreign_context)
    with pytest.raises(InvalidCiphertext):
        await kms.unwrap(wrapped["CiphertextBlob"], "kms-1")
    with pytest.raises(InvalidCiphertext):
        await kms.rewrap(wrapped["CiphertextBlob"], "kms-1")


async def test_blob_of_another_kms_key_is_refused(moto: MotoServer, admin: KMSClient, kms: AwsKms) -> None:
    other = make_kms(moto, new_key(admin))
    async with aclosing(other):
        kek, wrapped = await other.generate("kms-1")
        assert await other.unwrap(wrapped, "kms-1") == kek  # a good blob, only not ours
        # Without the pinned KeyId, KMS (and moto) would decrypt it with the key named inside the blob.
        # AWS answers IncorrectKeyException (-> InvalidCiphertext, see the stubbed table below); moto answers
        # AccessDeniedException, which we cannot tell from an IAM denial and so report as Unavailable.
        with pytest.raises(Unavailable) as caught:
            await kms.unwrap(wrapped, "kms-1")
        assert caught.value.reason == "unavailable"
        assert "AccessDeniedException" in caught.value.detail


async def test_rewrap_of_another_kms_keys_blob_is_refused(moto: MotoServer, admin: KMSClient, kms: AwsKms) -> None:
    # moto ignores ReEncrypt's SourceKeyId and would re-encrypt the foreign blob under our key: the refusal
    # comes from AwsKms comparing the source and destination key ARNs of the answer.
    other = make_kms(moto, new_key(admin))
    async with aclosing(other):
        _, wrapped = await other.generate("kms-1")
        with pytest.raises(InvalidCiphertext):
            await kms.rewrap(wrapped, "kms-1")


async def test_flipped_bytes_never_unwrap(kms: AwsKms) -> None:
    kek, wrapped = await kms.generate("kms-1")
    with anyio.fail_after(BOUND * 2):
        for position in range(len(wrapped)):
            tampered = flipped(wrapped, position)
            if position < MOTO_KEY_ID_BYTES:
                # moto's unauthenticated key-id header: a changed id names no key, AccessDeniedException
                # (AWS answers InvalidCiphertextException). Either way nothing unwraps.
                with pytest.raises((InvalidCiphertext, Unavailable)):
                    await kms.unwrap(tampered, "kms-1")
            else:
                with pytest.raises(InvalidCiphertext):
                    await kms.unwrap(tampered, "kms-1")
    assert await kms.unwrap(wrapped, "kms-1") == kek


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(lambda blob: b"", id="empty"),
        pytest.param(lambda blob: b"\x00", id="one-byte"),
        pytest.param(lambda blob: b"x" * 10, id="short"),
        pytest.param(lambda blob: blob[:-1], id="truncated"),
        pytest.param(lambda blob: blob + b"\x00", id="extended"),
        pytest.param(lambda blob: blob[:MOTO_KEY_ID_BYTES] + os.urandom(60), id="our-key-id-then-random"),
        pytest.param(lambda blob: b"\x01" * 6145, id="over-kms-limit"),
    ],
)
async def test_garbage_is_invalid_ciphertext(kms: AwsKms, garbage: Callable[[bytes], bytes]) -> None:
    _, wrapped = await kms.generate("kms-1")
    blob = garbage(wrapped)
    with pytest.raises(InvalidCiphertext):
        await kms.unwrap(blob, "kms-1")
    with pytest.raises(InvalidCiphertext):
        await kms.rewrap(blob, "kms-1")


@pytest.mark.parametrize("size", [16, 31, 33, 64])
async def test_authentic_blob_that_is_not_a_32_byte_kek_fails(
    admin: KMSClient, key_id: str, kms: AwsKms, size: int
) -> None:
    """Right key and context, but the plaintext is no AES-256 KEK (an AES_128 data key, say)."""
    wrapped = admin.encrypt(KeyId=key_id, Plaintext=os.urandom(size), EncryptionContext=context("kms-1"))
    with pytest.raises(InvalidCiphertext):
        await kms.unwrap(wrapped["CiphertextBlob"], "kms-1")


async def test_malformed_kek_id_is_a_programming_error(kms: AwsKms) -> None:
    with pytest.raises(ValueError, match="KEK id"):
        await kms.generate("has space")
    with pytest.raises(ValueError, match="KEK id"):
        await kms.unwrap(b"x" * 40, "")


# --- rewrap --------------------------------------------------------------------------------------------------


async def test_rewrap_unwraps_to_the_same_kek(admin: KMSClient, key_id: str, kms: AwsKms) -> None:
    kek, wrapped = await kms.generate("kms-1")
    rewrapped = await kms.rewrap(wrapped, "kms-1")
    assert rewrapped != wrapped
    assert await kms.unwrap(rewrapped, "kms-1") == kek
    # The context travels along: the new blob is still bound to this kek_id.
    with pytest.raises(InvalidCiphertext):
        await kms.unwrap(rewrapped, "kms-2")
    with pytest.raises(InvalidCiphertext):
        await kms.rewrap(wrapped, "kms-2")
    # After a rotation (which in moto records the rotation without new key material, so which backing
    # key ReEncrypt used cannot be observed here) both blobs still unwrap, and rewrap still round-trips.
    admin.rotate_key_on_demand(KeyId=key_id)
    again = await kms.rewrap(rewrapped, "kms-1")
    assert await kms.unwrap(again, "kms-1") == kek
    assert await kms.unwrap(wrapped, "kms-1") == kek


# --- the service unusable: Unavailable, never InvalidCiphertext ----------------------------------------------


async def test_key_that_does_not_exist_is_unavailable(moto: MotoServer, kms: AwsKms) -> None:
    _, wrapped = await kms.generate("kms-1")
    async with aclosing(make_kms(moto, "alias/not-there")) as missing:
        for call in all_calls(missing, wrapped):
            with pytest.raises(Unavailable) as caught:
                await call()
            assert "NotFoundException" in caught.value.detail
            assert missing.name in caught.value.detail


async def test_stopped_server_is_unavailable_within_bounds(own_moto: MotoServer) -> None:
    admin = admin_client(own_moto)
    async with aclosing(make_kms(own_moto, new_key(admin), timeout=2.0)) as kms:
        _, wrapped = await kms.generate("kms-1")
        admin.close()
        own_moto.stop()
        for call in all_calls(kms, wrapped):
            with anyio.fail_after(BOUND), pytest.raises(Unavailable) as caught:
                await call()
            assert caught.value.reason == "unavailable"
            assert f"aws-kms:{REGION}/" in caught.value.detail
            assert "EndpointConnectionError" in caught.value.detail


async def test_recovers_when_the_server_is_back(own_moto: MotoServer) -> None:
    # An alias, so that the key made again after the restart has the name the running AwsKms uses.
    alias = "alias/mcp-bastion-restart"
    admin = admin_client(own_moto)
    admin.create_alias(AliasName=alias, TargetKeyId=new_key(admin))
    async with aclosing(make_kms(own_moto, alias, timeout=2.0)) as kms:
        kek, wrapped = await kms.generate("kms-1")
        assert await kms.unwrap(wrapped, "kms-1") == kek  # a pooled keep-alive connection now exists
        await anyio.to_thread.run_sync(own_moto.stop)
        with anyio.fail_after(BOUND), pytest.raises(Unavailable):
            await kms.unwrap(wrapped, "kms-1")
        await anyio.to_thread.run_sync(own_moto.start)
        # moto kept nothing: the operator's key is made again (real KMS would still hold it, and the old
        # blob would unwrap; here its key is gone, so it is not tried). The same AwsKms, its old
        # connections dead, works again without being rebuilt.
        admin.create_alias(AliasName=alias, TargetKeyId=new_key(admin))
        with anyio.fail_after(BOUND):
            kek, wrapped = await kms.generate("kms-1")
            assert await kms.unwrap(wrapped, "kms-1") == kek
            assert await kms.unwrap(await kms.rewrap(wrapped, "kms-1"), "kms-1") == kek
    admin.close()


async def test_server_that_never_answers_times_out() -> None:
    """A listener that accepts connections and never answers: the call ends at ``timeout``, not later."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        async with aclosing(make_kms(url, "alias/anything", timeout=0.5)) as kms:
            with anyio.fail_after(BOUND), pytest.raises(Unavailable) as caught:
                await kms.generate("kms-1")
    assert caught.value.reason == "unavailable"
    assert kms.name in caught.value.detail
    assert "no answer within 0.5 s" in caught.value.detail  # our deadline, not botocore's read timeouts


STUBBED: Final = [
    # (method, KMS error code, what AwsKms raises)
    ("unwrap", "InvalidCiphertextException", InvalidCiphertext),
    ("unwrap", "IncorrectKeyException", InvalidCiphertext),
    ("rewrap", "InvalidCiphertextException", InvalidCiphertext),
    ("rewrap", "IncorrectKeyException", InvalidCiphertext),
    *[
        (method, code, Unavailable)
        for method in ("generate", "unwrap", "rewrap")
        for code in (
            "DisabledException",
            "KMSInvalidStateException",
            "KeyUnavailableException",
            "AccessDeniedException",
            "NotFoundException",
            "ThrottlingException",
            "KMSInternalException",
            "DependencyTimeoutException",
            "UnrecognizedClientException",
            "ExpiredTokenException",
        )
    ],
    # On GenerateDataKey there is no ciphertext of ours: "invalid ciphertext" there is a broken service.
    ("generate", "InvalidCiphertextException", Unavailable),
]
OPERATIONS: Final = {"generate": "generate_data_key", "unwrap": "decrypt", "rewrap": "re_encrypt"}


@pytest.mark.parametrize(
    ("method", "code", "expected"), [pytest.param(*case, id=f"{case[0]}-{case[1]}") for case in STUBBED]
)
async def test_kms_error_codes(method: str, code: str, expected: type[Exception]) -> None:
    """Answers moto never gives (disabled key, pending deletion, throttling...), through a real botocore client."""
    async with aclosing(make_kms("https://kms.invalid", "alias/stubbed")) as kms:
        with Stubber(kms._client) as stubber:
            stubber.add_client_error(OPERATIONS[method], service_error_code=code, http_status_code=400)
            calls: dict[str, Callable[[], Awaitable[object]]] = {
                "generate": lambda: kms.generate("kms-1"),
                "unwrap": lambda: kms.unwrap(b"w" * 64, "kms-1"),
                "rewrap": lambda: kms.rewrap(b"w" * 64, "kms-1"),
            }
            with pytest.raises(expected) as caught:
                await calls[method]()
            stubber.assert_no_pending_responses()
    if isinstance(caught.value, Unavailable):
        assert code in caught.value.detail
        assert "aws-kms:eu-west-1/alias/stubbed" in caught.value.detail
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None


async def test_generate_answer_without_a_32_byte_key_is_unavailable() -> None:
    async with aclosing(make_kms("https://kms.invalid", "alias/stubbed")) as kms:
        with Stubber(kms._client) as stubber:
            stubber.add_response("generate_data_key", {"Plaintext": b"k" * 16, "CiphertextBlob": b"c" * 64})
            with pytest.raises(Unavailable):
                await kms.generate("kms-1")


async def test_rewrap_answer_from_another_source_key_is_refused() -> None:
    async with aclosing(make_kms("https://kms.invalid", "alias/stubbed")) as kms:
        with Stubber(kms._client) as stubber:
            arn = "arn:aws:kms:eu-west-1:111122223333:key/"
            answer = {"CiphertextBlob": b"c" * 64, "SourceKeyId": arn + "other", "KeyId": arn + "ours"}
            stubber.add_response("re_encrypt", answer)
            with pytest.raises(InvalidCiphertext):
                await kms.rewrap(b"w" * 64, "kms-1")


# --- configuration -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "allow"),
    [
        pytest.param("http://10.0.0.5:4566", True, id="private-ip"),
        pytest.param("http://kms.example.com", True, id="http-host-name"),
        pytest.param("http://localhost:4566", True, id="localhost-is-a-name"),
        pytest.param("http://127.0.0.1:4566", False, id="loopback-without-allow"),
        pytest.param("http://[::1]:4566", False, id="ipv6-loopback-without-allow"),
        pytest.param("ftp://127.0.0.1", True, id="other-scheme"),
        pytest.param("https://", False, id="no-host"),
        pytest.param("kms.eu-west-1.amazonaws.com", False, id="no-scheme"),
        pytest.param("https://kms.example.com?x=1", False, id="query"),
        pytest.param("https://kms.example.com:port", False, id="bad-port"),
        pytest.param(f"https://{ACCESS_KEY_ID}:{SECRET_ACCESS_KEY}@kms.example.com", False, id="userinfo"),
    ],
)
def test_endpoint_refused(url: str, allow: bool) -> None:
    with pytest.raises(ConfigError) as caught:
        AwsKms(key_id="alias/k", region=REGION, endpoint_url=url, allow_insecure_http=allow)
    assert caught.value.reason == "config_error"
    assert SECRET_ACCESS_KEY not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "allow"),
    [
        pytest.param(None, False, id="aws-default"),
        pytest.param("https://vpce-0abc.kms.eu-west-1.vpce.amazonaws.com", False, id="vpc-endpoint"),
        pytest.param("http://127.0.0.1:4566", True, id="loopback-v4"),
        pytest.param("http://127.8.9.10:4566", True, id="loopback-range"),
        pytest.param("http://[::1]:4566", True, id="loopback-v6"),
    ],
)
async def test_endpoint_accepted(url: str | None, allow: bool) -> None:
    async with aclosing(AwsKms(key_id="alias/k", region=REGION, endpoint_url=url, allow_insecure_http=allow)) as kms:
        assert kms.name == f"aws-kms:{REGION}/alias/k"


async def test_ambient_endpoint_settings_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    """AWS_ENDPOINT_URL* could send KEKs over plain http anywhere; only our checked setting counts."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://10.0.0.5:4566")
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", "http://10.0.0.5:4566")
    async with aclosing(AwsKms(key_id="alias/k", region=REGION)) as kms:
        assert kms._client.meta.endpoint_url == f"https://kms.{REGION}.amazonaws.com"


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"key_id": ""}, id="empty-key-id"),
        pytest.param({"key_id": "alias/with space"}, id="key-id-with-space"),
        pytest.param({"region": ""}, id="empty-region"),
        pytest.param({"region": "eu-west-1/evil"}, id="region-with-slash"),
        pytest.param({"timeout": 0.0}, id="zero-timeout"),
        pytest.param({"access_key_id": ACCESS_KEY_ID}, id="access-key-without-secret"),
        pytest.param({"secret_access_key": SECRET_ACCESS_KEY}, id="secret-without-access-key"),
        pytest.param({"session_token": SESSION_TOKEN}, id="token-alone"),
    ],
)
def test_bad_settings_refused(options: dict[str, str | float]) -> None:
    settings: dict[str, str | float] = {"key_id": "alias/k", "region": REGION, **options}
    with pytest.raises(ConfigError) as caught:
        AwsKms(**settings)  # type: ignore[arg-type]
    for secret in SECRETS:
        assert secret not in str(caught.value)


# --- credentials stay out of sight ---------------------------------------------------------------------------


def chain_text(exc: BaseException) -> str:
    """Everything an exception and its causes would print, and the reprs of everything they hold."""
    parts: list[str] = []
    current: BaseException | None = exc
    while current is not None:
        parts += [str(current), repr(current), repr(vars(current))]
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


async def test_credentials_never_shown(own_moto: MotoServer) -> None:
    admin = admin_client(own_moto)
    foreign = admin.generate_data_key(KeyId=new_key(admin), KeySpec="AES_256", EncryptionContext=context("kms-1"))
    async with aclosing(make_kms(own_moto, new_key(admin), timeout=2.0)) as kms:
        shown = [repr(kms), str(kms), kms.name]
        _, wrapped = await kms.generate("kms-1")
        failures: list[BaseException] = []
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: kms.unwrap(wrapped, "kms-2"),  # InvalidCiphertext
            lambda: kms.unwrap(foreign["CiphertextBlob"], "kms-1"),  # Unavailable (AccessDeniedException)
        ]
        for call in calls:
            with pytest.raises((InvalidCiphertext, Unavailable)) as caught:
                await call()
            failures.append(caught.value)
        admin.close()
        own_moto.stop()
        with anyio.fail_after(BOUND), pytest.raises(Unavailable) as unreachable:
            await kms.unwrap(wrapped, "kms-1")  # Unavailable (EndpointConnectionError)
        failures.append(unreachable.value)
        shown += [chain_text(exc) for exc in failures]
    for secret in SECRETS:
        for text in shown:
            assert secret not in text


async def test_signed_request_does_not_hang_off_the_error() -> None:
    """A server that hangs up on every request: botocore's ConnectionClosedError keeps the signed request,
    headers with the access key id and session token included. None of it may travel with our error."""

    async def hang_up(stream: anyio.abc.SocketStream) -> None:
        await stream.aclose()

    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, hang_up)
        port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 (anyio, not Django)
        async with aclosing(make_kms(f"http://127.0.0.1:{port}", "alias/anything", timeout=5.0)) as kms:
            with anyio.fail_after(BOUND), pytest.raises(Unavailable) as caught:
                await kms.unwrap(b"w" * 64, "kms-1")
        tg.cancel_scope.cancel()
    assert "ConnectionClosedError" in caught.value.detail
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None
    for secret in SECRETS:
        assert secret not in chain_text(caught.value)
