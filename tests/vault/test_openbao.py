"""``OpenBaoTransit`` against a real OpenBao dev server (``tests/helpers/openbao.py``).

Most tests share one server and use their own Transit key; the ones that stop, seal or restart a server,
or need TLS, start their own.
"""

from __future__ import annotations

import base64
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Final

import anyio
import pytest
from anyio.abc import SocketAttribute, SocketStream

from mcp_bastion.errors import ConfigError, Unavailable
from mcp_bastion.vault.envelope import InvalidCiphertext
from mcp_bastion.vault.openbao import CONTEXT_LABEL, OpenBaoTransit
from mcp_bastion.vault.remote import WrappedKeyRing
from mcp_bastion.vault.wrapper import KeyWrapper
from tests.helpers.openbao import OpenBaoServer, openbao_server

pytestmark = pytest.mark.anyio

KEK_ID: Final = "remote-1"
BOUND: Final = 10.0
"""Seconds any single step of a test may take (every wait is bounded)."""


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBaoServer]:
    with openbao_server(tmp_path_factory.mktemp("openbao")) as server:
        server.api("POST", "sys/auth/approle", {"type": "approle"})
        yield server


@pytest.fixture
def key_name() -> str:
    return f"k-{uuid.uuid4().hex[:12]}"


def connect(server: OpenBaoServer, key_name: str, **options: object) -> OpenBaoTransit:
    settings: dict[str, object] = {"token": server.root_token, "allow_insecure_http": True, "timeout": 3.0}
    settings.update(options)
    return OpenBaoTransit(url=server.url, key_name=key_name, **settings)  # type: ignore[arg-type]


@pytest.fixture
async def transit(bao: OpenBaoServer, key_name: str) -> AsyncIterator[OpenBaoTransit]:
    wrapper = connect(bao, key_name)
    await wrapper.ensure_key()
    yield wrapper
    await wrapper.aclose()


def assert_no_secrets(error: BaseException, *secrets: str) -> None:
    """Neither the message, the repr nor the audit detail carry a secret, and no foreign exception (whose
    request object holds the X-Vault-Token header) hangs off ours."""
    texts = [str(error), repr(error), getattr(error, "detail", "")]
    for secret in secrets:
        assert secret
        assert all(secret not in text for text in texts)
    assert error.__cause__ is None
    assert error.__context__ is None


def make_role(server: OpenBaoServer, key_name: str, paths: dict[str, list[str]], **role: object) -> tuple[str, str]:
    """An AppRole whose policy grants ``paths`` (relative to ``transit/``); returns (role_id, secret_id)."""
    name = f"r-{uuid.uuid4().hex[:12]}"
    rules = "\n".join(
        f'path "transit/{path.format(key=key_name)}" {{ capabilities = {capabilities!r} }}'.replace("'", '"')
        for path, capabilities in paths.items()
    )
    policies = ["default"]
    if rules:
        server.api("PUT", f"sys/policies/acl/{name}", {"policy": rules})
        policies.append(name)
    server.api("POST", f"auth/approle/role/{name}", {"token_policies": policies, "token_ttl": "1h", **role})
    role_id = server.data("GET", f"auth/approle/role/{name}/role-id")["role_id"]
    secret_id = server.data("POST", f"auth/approle/role/{name}/secret-id")["secret_id"]
    assert isinstance(role_id, str)
    assert isinstance(secret_id, str)
    return role_id, secret_id


WRAP_PATHS: Final = {
    "datakey/plaintext/{key}": ["update"],
    "decrypt/{key}": ["update"],
    "rewrap/{key}": ["update"],
    "keys/{key}": ["read"],
}


def token_count(server: OpenBaoServer) -> int:
    keys = server.data("GET", "auth/token/accessors?list=true")["keys"]
    assert isinstance(keys, list)
    return len(keys)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- wrapping ------------------------------------------------------------------------------------------------


async def test_generate_then_unwrap_round_trip(transit: OpenBaoTransit, key_name: str) -> None:
    wrapper: KeyWrapper = transit
    assert wrapper.name == f"openbao-transit:transit/{key_name}"
    with anyio.fail_after(BOUND):
        key, wrapped = await wrapper.generate(KEK_ID)
        other_key, other_wrapped = await wrapper.generate(KEK_ID)
        assert len(key) == 32
        assert wrapped.startswith(b"vault:v1:")
        assert key not in wrapped
        assert base64.b64encode(key) not in wrapped
        assert (other_key, other_wrapped) != (key, wrapped)
        assert await wrapper.unwrap(wrapped, KEK_ID) == key
        assert await wrapper.unwrap(other_wrapped, KEK_ID) == other_key


async def test_unwrap_under_another_kek_id_fails(transit: OpenBaoTransit) -> None:
    # The Transit context binds the wrapped KEK to its id: a copy filed under another id does not open.
    with anyio.fail_after(BOUND):
        _, wrapped = await transit.generate(KEK_ID)
        with pytest.raises(InvalidCiphertext):
            await transit.unwrap(wrapped, "remote-2")
        with pytest.raises(InvalidCiphertext):
            await transit.rewrap(wrapped, "remote-2")


async def test_wrapped_kek_of_another_transit_key_fails(bao: OpenBaoServer, transit: OpenBaoTransit) -> None:
    other = connect(bao, f"k-{uuid.uuid4().hex[:12]}")
    with anyio.fail_after(BOUND):
        await other.ensure_key()
        _, wrapped = await other.generate(KEK_ID)
        with pytest.raises(InvalidCiphertext):
            await transit.unwrap(wrapped, KEK_ID)
    await other.aclose()


def _flip(wrapped: bytes) -> bytes:
    middle = len(wrapped) // 2
    replacement = b"A" if wrapped[middle : middle + 1] != b"A" else b"B"
    return wrapped[:middle] + replacement + wrapped[middle + 1 :]


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(_flip, id="flipped-byte"),  # OpenBao: 400 "cipher: message authentication failed"
        pytest.param(lambda w: w.replace(b"vault:v1:", b"vault:v9:"), id="version-too-new"),  # 400 "...too new"
        pytest.param(lambda w: b"vault:v1:AAAA", id="too-short"),  # 400 "invalid ciphertext length"
        pytest.param(lambda w: w[:-8], id="truncated"),
        pytest.param(lambda w: b"garbage", id="garbage"),
        pytest.param(lambda w: b"", id="empty"),
        pytest.param(lambda w: w + b"\n", id="trailing-newline"),
        pytest.param(lambda w: w.replace(b"vault:", b"\xff\xfe:"), id="not-ascii"),
        pytest.param(lambda w: w + b"A" * 600, id="too-long"),
        pytest.param(lambda w: w.replace(b"vault:v1:", b"vault:v0:"), id="version-zero"),
    ],
)
async def test_tampered_or_malformed_wrapped_kek_fails(transit: OpenBaoTransit, tamper: object) -> None:
    assert callable(tamper)
    with anyio.fail_after(BOUND):
        _, wrapped = await transit.generate(KEK_ID)
        bad = tamper(wrapped)
        assert isinstance(bad, bytes)
        assert bad != wrapped
        with pytest.raises(InvalidCiphertext):
            await transit.unwrap(bad, KEK_ID)
        with pytest.raises(InvalidCiphertext):
            await transit.rewrap(bad, KEK_ID)


async def test_a_transit_ciphertext_that_is_not_a_kek_fails(
    bao: OpenBaoServer, transit: OpenBaoTransit, key_name: str
) -> None:
    # Same key, same context, but 16 bytes inside (Transit "encrypt", which our policy never grants).
    context = base64.b64encode(CONTEXT_LABEL + KEK_ID.encode()).decode()
    plaintext = base64.b64encode(b"sixteen bytes!!!").decode()
    answer = bao.data("POST", f"transit/encrypt/{key_name}", {"plaintext": plaintext, "context": context})
    ciphertext = answer["ciphertext"]
    assert isinstance(ciphertext, str)
    with anyio.fail_after(BOUND), pytest.raises(InvalidCiphertext):
        await transit.unwrap(ciphertext.encode(), KEK_ID)


# -- the Transit key -----------------------------------------------------------------------------------------


async def test_ensure_key_creates_a_derived_aes256_gcm96_key(bao: OpenBaoServer, key_name: str) -> None:
    wrapper = connect(bao, key_name)
    with anyio.fail_after(BOUND):
        await wrapper.ensure_key()
        await wrapper.ensure_key()  # idempotent
        await wrapper.prepare()  # the KeyWrapper name for it
    key = bao.data("GET", f"transit/keys/{key_name}")
    assert (key["type"], key["derived"], key["latest_version"]) == ("aes256-gcm96", True, 1)
    await wrapper.aclose()


@pytest.mark.parametrize(
    "config",
    [
        pytest.param({"type": "aes256-gcm96"}, id="not-derived"),
        pytest.param({"type": "chacha20-poly1305", "derived": True}, id="chacha20"),
        pytest.param({"type": "aes128-gcm96", "derived": True}, id="aes128"),
    ],
)
async def test_an_existing_key_of_the_wrong_kind_is_refused(
    bao: OpenBaoServer, key_name: str, config: dict[str, object]
) -> None:
    # A non-derived key ignores the Transit context (OpenBao answers 200 anyway): the KEK id binding
    # would silently not hold. Both ensure_key and the first wrap on a fresh instance refuse it.
    bao.api("POST", f"transit/keys/{key_name}", config)
    wrapper = connect(bao, key_name)
    with anyio.fail_after(BOUND):
        with pytest.raises(ConfigError) as refused:
            await wrapper.ensure_key()
        assert refused.value.reason == "config_error"
        with pytest.raises(ConfigError):
            await wrapper.prepare()
        with pytest.raises(ConfigError):
            await wrapper.generate(KEK_ID)
        fresh = connect(bao, key_name)
        with pytest.raises(ConfigError):
            await fresh.unwrap(b"vault:v1:" + b"A" * 80, KEK_ID)
    await wrapper.aclose()
    await fresh.aclose()


async def test_a_missing_key_is_unavailable_not_invalid_ciphertext(bao: OpenBaoServer, key_name: str) -> None:
    # OpenBao: 404 on transit/keys/<key> (no such key) and on an unmounted path.
    wrapper = connect(bao, key_name)
    unmounted = connect(bao, key_name, mount="nowhere")
    with anyio.fail_after(BOUND):
        with pytest.raises(Unavailable):
            await wrapper.unwrap(b"vault:v1:" + b"A" * 80, KEK_ID)
        with pytest.raises(Unavailable):
            await unmounted.generate(KEK_ID)
    await wrapper.aclose()
    await unmounted.aclose()


# -- root key rotation ---------------------------------------------------------------------------------------


async def test_rotate_root_then_rewrap_keeps_the_kek(transit: OpenBaoTransit) -> None:
    with anyio.fail_after(BOUND):
        key, wrapped = await transit.generate(KEK_ID)
        assert await transit.rotate_root() == 2
        rewrapped = await transit.rewrap(wrapped, KEK_ID)
        assert rewrapped.startswith(b"vault:v2:")
        assert await transit.unwrap(rewrapped, KEK_ID) == key
        assert (await transit.generate(KEK_ID))[1].startswith(b"vault:v2:")
        assert await transit.rotate_root() == 3


async def test_min_decryption_version_retires_old_wrapped_forms(transit: OpenBaoTransit) -> None:
    with anyio.fail_after(BOUND):
        key, old = await transit.generate(KEK_ID)
        await transit.rotate_root()
        new = await transit.rewrap(old, KEK_ID)
        await transit.set_min_decryption_version(2)
        # OpenBao: 400 "ciphertext or signature version is disallowed by policy (too old)".
        with pytest.raises(InvalidCiphertext):
            await transit.unwrap(old, KEK_ID)
        with pytest.raises(InvalidCiphertext):
            await transit.rewrap(old, KEK_ID)
        assert await transit.unwrap(new, KEK_ID) == key


async def test_min_decryption_version_must_exist(transit: OpenBaoTransit) -> None:
    with anyio.fail_after(BOUND):
        with pytest.raises(ConfigError):  # OpenBao: 400 "cannot set min decryption version of 5, latest ... is 1"
            await transit.set_min_decryption_version(5)
        with pytest.raises(ValueError, match="min_decryption_version"):
            await transit.set_min_decryption_version(0)


async def test_a_wrapped_key_ring_over_transit(transit: OpenBaoTransit, tmp_path: Path) -> None:
    # The seam in use: KEKs wrapped by Transit, the root key rotated and its old version retired.
    ring = WrappedKeyRing(transit, tmp_path / "vault-keys.json")
    with anyio.fail_after(BOUND):
        await ring.load()
        first = ring.current
        second = await ring.rotate()
        assert await transit.rotate_root() == 2
        assert await ring.rewrap_root() == 2
        await transit.set_min_decryption_version(2)
        await ring.refresh()
    assert ring.current == second
    assert ring.get(first.id) == first.key


# -- AppRole -------------------------------------------------------------------------------------------------


async def test_approle_round_trip(bao: OpenBaoServer, transit: OpenBaoTransit, key_name: str) -> None:
    role_id, secret_id = make_role(bao, key_name, WRAP_PATHS)
    wrapper = connect(bao, key_name, token=None, role_id=role_id, secret_id=secret_id)
    assert all(secret not in repr(wrapper) for secret in (role_id, secret_id, bao.root_token))
    with anyio.fail_after(BOUND):
        key, wrapped = await wrapper.generate(KEK_ID)
        assert await wrapper.unwrap(wrapped, KEK_ID) == key
        assert await transit.unwrap(wrapped, KEK_ID) == key  # the same root key as the root token sees
        assert (await wrapper.rewrap(wrapped, KEK_ID)).startswith(b"vault:v1:")
        # The policy grants nothing else: operator calls are refused, as permission errors.
        with pytest.raises(Unavailable) as refused:
            await wrapper.rotate_root()
    assert "permission denied" in refused.value.detail
    assert_no_secrets(refused.value, role_id, secret_id, bao.root_token)
    await wrapper.aclose()


async def test_approle_logs_in_again_after_its_token_is_revoked(
    bao: OpenBaoServer, transit: OpenBaoTransit, key_name: str
) -> None:
    role_id, secret_id = make_role(bao, key_name, WRAP_PATHS)
    wrapper = connect(bao, key_name, token=None, role_id=role_id, secret_id=secret_id)
    with anyio.fail_after(BOUND):
        key, wrapped = await wrapper.generate(KEK_ID)
        bao.api("PUT", "sys/leases/revoke-prefix/auth/approle/login")  # every AppRole token is gone
        assert await wrapper.unwrap(wrapped, KEK_ID) == key  # 403, one new login, success
    await wrapper.aclose()


async def test_approle_logs_in_again_before_its_token_expires(
    bao: OpenBaoServer, transit: OpenBaoTransit, key_name: str
) -> None:
    role_id, secret_id = make_role(bao, key_name, WRAP_PATHS)
    clock = FakeClock()
    wrapper = connect(bao, key_name, token=None, role_id=role_id, secret_id=secret_id, monotonic=clock)
    with anyio.fail_after(BOUND):
        _, wrapped = await wrapper.generate(KEK_ID)
        tokens = token_count(bao)
        await wrapper.unwrap(wrapped, KEK_ID)
        assert token_count(bao) == tokens  # the token is reused
        clock.now += 3600 * 0.9  # most of its one-hour TTL is gone
        await wrapper.unwrap(wrapped, KEK_ID)
        assert token_count(bao) == tokens + 1  # a new login, before OpenBao expired the old token
    await wrapper.aclose()


@pytest.mark.parametrize(
    "paths",
    [
        pytest.param({}, id="no-transit-policy"),
        pytest.param({"keys/{key}": ["read"]}, id="may-read-the-key-only"),
    ],
)
async def test_approle_without_the_transit_policy_is_unavailable(
    bao: OpenBaoServer, transit: OpenBaoTransit, key_name: str, paths: dict[str, list[str]]
) -> None:
    # OpenBao answers 403 "permission denied" (also after the one new login): that is "cannot unwrap right
    # now", never "this wrapped KEK is forged".
    _, wrapped = await transit.generate(KEK_ID)
    role_id, secret_id = make_role(bao, key_name, paths)
    wrapper = connect(bao, key_name, token=None, role_id=role_id, secret_id=secret_id)
    with anyio.fail_after(BOUND):
        with pytest.raises(Unavailable) as refused:
            await wrapper.unwrap(wrapped, KEK_ID)
        with pytest.raises(Unavailable):
            await wrapper.generate(KEK_ID)
    assert refused.value.reason == "unavailable"
    assert "permission denied" in refused.value.detail
    assert_no_secrets(refused.value, role_id, secret_id, bao.root_token)
    await wrapper.aclose()


async def test_approle_with_a_wrong_secret_id_is_unavailable(
    bao: OpenBaoServer, transit: OpenBaoTransit, key_name: str
) -> None:
    role_id, secret_id = make_role(bao, key_name, WRAP_PATHS)
    wrong = f"{secret_id[:-4]}beef"
    wrapper = connect(bao, key_name, token=None, role_id=role_id, secret_id=wrong)
    with anyio.fail_after(BOUND):
        with pytest.raises(Unavailable) as refused:  # OpenBao: 400 "invalid role or secret ID"
            await wrapper.generate(KEK_ID)
    assert_no_secrets(refused.value, role_id, wrong, secret_id)
    await wrapper.aclose()


async def test_a_wrong_token_is_unavailable(bao: OpenBaoServer, transit: OpenBaoTransit, key_name: str) -> None:
    _, wrapped = await transit.generate(KEK_ID)
    wrapper = connect(bao, key_name, token="s.not-a-real-token")
    with anyio.fail_after(BOUND):
        with pytest.raises(Unavailable) as refused:
            await wrapper.unwrap(wrapped, KEK_ID)
    assert "permission denied" in refused.value.detail
    assert_no_secrets(refused.value, "s.not-a-real-token", bao.root_token)
    await wrapper.aclose()


# -- an OpenBao that cannot answer ---------------------------------------------------------------------------


async def test_a_stopped_server_is_unavailable(tmp_path: Path) -> None:
    with openbao_server(tmp_path) as server:
        wrapper = connect(server, "k", timeout=2.0)
        with anyio.fail_after(BOUND):
            await wrapper.ensure_key()
            _, wrapped = await wrapper.generate(KEK_ID)
            server.stop()
            for call in (wrapper.generate(KEK_ID), wrapper.unwrap(wrapped, KEK_ID), wrapper.rewrap(wrapped, KEK_ID)):
                with pytest.raises(Unavailable) as down:
                    await call
                assert server.url in down.value.detail
                assert_no_secrets(down.value, server.root_token)
        await wrapper.aclose()


async def test_a_sealed_server_is_unavailable(tmp_path: Path) -> None:
    with openbao_server(tmp_path) as server:
        wrapper = connect(server, "k")
        with anyio.fail_after(BOUND):
            await wrapper.ensure_key()
            _, wrapped = await wrapper.generate(KEK_ID)
            server.api("PUT", "sys/seal")
            with pytest.raises(Unavailable) as sealed:  # OpenBao: 503 "Vault is sealed"
                await wrapper.unwrap(wrapped, KEK_ID)
        assert "sealed" in sealed.value.detail
        assert_no_secrets(sealed.value, server.root_token)
        await wrapper.aclose()


async def test_a_client_survives_a_server_restart(tmp_path: Path) -> None:
    # Dev mode keeps everything in memory, so the restarted server is a new OpenBao on the same port:
    # the same client (same URL and token) works again once the key exists, and a KEK wrapped by the old
    # root key does not open with the new one.
    with openbao_server(tmp_path / "first") as first:
        wrapper = connect(first, "k", timeout=2.0)
        with anyio.fail_after(BOUND):
            await wrapper.ensure_key()
            _, wrapped = await wrapper.generate(KEK_ID)
    with anyio.fail_after(BOUND):
        with pytest.raises(Unavailable):
            await wrapper.generate(KEK_ID)
    with openbao_server(tmp_path / "second", port=first.port, token=first.root_token):
        with anyio.fail_after(BOUND):
            await wrapper.ensure_key()
            key, rewrapped = await wrapper.generate(KEK_ID)
            assert await wrapper.unwrap(rewrapped, KEK_ID) == key
            with pytest.raises(InvalidCiphertext):
                await wrapper.unwrap(wrapped, KEK_ID)
    await wrapper.aclose()


async def test_a_server_that_never_answers_times_out() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel accepts connections; nobody ever reads or answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        wrapper = OpenBaoTransit(url=url, key_name="k", token="t0ken-xyz", allow_insecure_http=True, timeout=0.5)
        with anyio.fail_after(BOUND):
            with pytest.raises(Unavailable) as slow:
                await wrapper.generate(KEK_ID)
        assert url in slow.value.detail
        assert_no_secrets(slow.value, "t0ken-xyz")
        await wrapper.aclose()


async def test_a_server_that_trickles_is_cut_off_at_the_timeout() -> None:
    # Each byte arrives before the socket timeout, so only the call's own deadline ends the wait.
    async def trickle(stream: SocketStream) -> None:
        async with stream:
            await stream.send(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            with anyio.move_on_after(BOUND):
                while True:
                    await stream.send(b"x")
                    await anyio.sleep(0.05)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(SocketAttribute.local_port)  # noqa: S610 (anyio, not Django)
    wrapper = OpenBaoTransit(
        url=f"http://127.0.0.1:{port}", key_name="k", token="t0ken-xyz", allow_insecure_http=True, timeout=0.5
    )
    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, trickle)
        with anyio.fail_after(BOUND), pytest.raises(Unavailable) as slow:
            await wrapper.generate(KEK_ID)
        group.cancel_scope.cancel()
    assert "did not answer" in slow.value.detail
    await wrapper.aclose()


async def test_proxy_variables_are_ignored(
    bao: OpenBaoServer, transit: OpenBaoTransit, key_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the configured URL and CA count: a proxy from the environment would see every KEK.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    wrapper = connect(bao, key_name)
    with anyio.fail_after(BOUND):
        key, wrapped = await wrapper.generate(KEK_ID)
        assert await wrapper.unwrap(wrapped, KEK_ID) == key
    await wrapper.aclose()


async def test_tls_with_the_ca_bundle(tmp_path: Path) -> None:
    with openbao_server(tmp_path, tls=True) as server:
        assert server.url.startswith("https://")
        assert server.ca_bundle is not None
        wrapper = connect(server, "k", allow_insecure_http=False, ca_bundle=server.ca_bundle)
        untrusted = connect(server, "k", allow_insecure_http=False)  # the dev CA is not in the system store
        vanished_ca = tmp_path / "vanished-ca.pem"
        vanished_ca.write_bytes(server.ca_bundle.read_bytes())
        vanishing = connect(server, "k", allow_insecure_http=False, ca_bundle=vanished_ca)
        vanished_ca.unlink()
        with anyio.fail_after(BOUND):
            await wrapper.ensure_key()
            key, wrapped = await wrapper.generate(KEK_ID)
            assert await wrapper.unwrap(wrapped, KEK_ID) == key
            with pytest.raises(Unavailable) as refused:
                await untrusted.unwrap(wrapped, KEK_ID)
            with pytest.raises(Unavailable):  # requests raises a plain OSError here
                await vanishing.unwrap(wrapped, KEK_ID)
        assert "TLS" in refused.value.detail
        await wrapper.aclose()
        await untrusted.aclose()
        await vanishing.aclose()


# -- configuration (no server) -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "insecure"),
    [
        pytest.param("http://bao.example:8200", True, id="http-to-a-remote-host"),
        pytest.param("http://10.0.0.5:8200", True, id="http-to-a-private-address"),
        pytest.param("http://127.0.0.1:8200", False, id="loopback-http-without-the-flag"),
        pytest.param("ftp://127.0.0.1", True, id="another-scheme"),
        pytest.param("https://user:pw@bao.example", False, id="credentials-in-the-url"),
        pytest.param("https://bao.example/?x=1", False, id="query"),
        pytest.param("https://", False, id="no-host"),
        pytest.param("https://bao.example:99999", False, id="bad-port"),
    ],
)
def test_urls_that_are_refused(url: str, insecure: bool) -> None:
    with pytest.raises(ConfigError) as refused:
        OpenBaoTransit(url=url, key_name="k", token="t", allow_insecure_http=insecure)
    assert "pw" not in str(refused.value)


@pytest.mark.parametrize(
    ("url", "insecure"),
    [
        pytest.param("https://bao.example:8200", False, id="https"),
        pytest.param("http://127.0.0.1:8200", True, id="loopback-v4"),
        pytest.param("http://[::1]:8200", True, id="loopback-v6"),
        pytest.param("http://localhost:8200", True, id="localhost"),
    ],
)
def test_urls_that_are_accepted(url: str, insecure: bool) -> None:
    assert OpenBaoTransit(url=url, key_name="k", token="t", allow_insecure_http=insecure).name == (
        "openbao-transit:transit/k"
    )


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({}, id="no-credentials"),
        pytest.param({"token": "t", "role_id": "r", "secret_id": "s"}, id="token-and-approle"),
        pytest.param({"role_id": "r"}, id="role-without-secret"),
        pytest.param({"secret_id": "s"}, id="secret-without-role"),
        pytest.param({"token": ""}, id="empty-token"),
        pytest.param({"token": "t", "key_name": "../sys"}, id="key-name-escapes"),
        pytest.param({"token": "t", "mount": "transit/../sys"}, id="mount-escapes"),
        pytest.param({"token": "t", "timeout": 0}, id="zero-timeout"),
        pytest.param({"token": "t", "ca_bundle": "/nonexistent/ca.pem"}, id="missing-ca-bundle"),
    ],
)
def test_settings_that_are_refused(options: dict[str, object]) -> None:
    settings: dict[str, object] = {"url": "https://bao.example", "key_name": "k", **options}
    with pytest.raises(ConfigError):
        OpenBaoTransit(**settings)  # type: ignore[arg-type]


def test_repr_shows_no_credentials() -> None:
    for options in ({"token": "s.tok3n-value"}, {"role_id": "r0le-value", "secret_id": "s3cret-value"}):
        wrapper = OpenBaoTransit(url="https://bao.example", key_name="k", **options)  # type: ignore[arg-type]
        assert all(value not in repr(wrapper) for value in options.values())
        assert "bao.example" in repr(wrapper)
