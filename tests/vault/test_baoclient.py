"""``BaoClient``, the OpenBao connection ``vault.kv`` and ``vault.openbao`` share: settings refused for both
users, credentials hidden from ``repr`` and from every ``Failure``, hvac and ``requests`` errors worded, the
lock, and AppRole login against a real OpenBao dev server (``tests/helpers/openbao.py``).

The users' own behaviour is tested in ``test_openbao.py`` (Transit) and ``tests/test_secrets_vault.py`` (KV).
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

import pytest
import requests
from hvac import exceptions as bao_errors  # type: ignore[import-untyped]

from mcp_bastion.errors import ConfigError
from mcp_bastion.vault.baoclient import BaoClient, Failure, Unexpected, json_object
from mcp_bastion.vault.kv import OpenBaoKV
from mcp_bastion.vault.openbao import OpenBaoTransit
from tests.helpers.openbao import OpenBaoServer, openbao_server

URL: Final = "https://bao.example"
TOKEN: Final = "s.tok3n-value"
ROLE_ID: Final = "r0le-value"
SECRET_ID: Final = "s3cret-value"

USERS: Final[dict[str, Callable[..., object]]] = {
    "client": BaoClient,
    "kv": OpenBaoKV,
    "transit": lambda **options: OpenBaoTransit(key_name="k", **options),
}
"""The shared connection, and each of its users built with the same settings."""


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBaoServer]:
    with openbao_server(tmp_path_factory.mktemp("openbao")) as server:
        server.api("POST", "sys/auth/approle", {"type": "approle"})
        yield server


def make_role(server: OpenBaoServer) -> tuple[str, str]:
    """An AppRole with the default policy and a one-hour token TTL; returns (role_id, secret_id)."""
    name = f"r-{uuid.uuid4().hex[:12]}"
    server.api("POST", f"auth/approle/role/{name}", {"token_policies": ["default"], "token_ttl": "1h"})
    role_id = server.data("GET", f"auth/approle/role/{name}/role-id")["role_id"]
    secret_id = server.data("POST", f"auth/approle/role/{name}/secret-id")["secret_id"]
    assert isinstance(role_id, str)
    assert isinstance(secret_id, str)
    return role_id, secret_id


def assert_safe(failure: Failure | object, *secrets: str) -> Failure:
    """A ``Failure`` holding strings only (no exception, no request object) and none of ``secrets``."""
    assert isinstance(failure, Failure)
    values = [getattr(failure, field.name) for field in dataclasses.fields(failure)]
    assert all(isinstance(value, str) for value in values)
    for secret in secrets:
        assert all(secret not in value for value in [*values, repr(failure)])
    return failure


def raising(exc: BaseException) -> Callable[[], object]:
    def call() -> object:
        raise exc

    return call


# -- settings (no server) ------------------------------------------------------------------------------------


@pytest.mark.parametrize("user", USERS)
@pytest.mark.parametrize(
    "options",
    [
        pytest.param({}, id="no-credentials"),
        pytest.param({"token": "t", "role_id": "r", "secret_id": "s"}, id="token-and-approle"),
        pytest.param({"role_id": "r"}, id="role-without-secret"),
        pytest.param({"secret_id": "s"}, id="secret-without-role"),
        pytest.param({"role_id": "", "secret_id": "s"}, id="empty-role"),
        pytest.param({"token": ""}, id="empty-token"),
        pytest.param({"token": "t", "timeout": 0}, id="zero-timeout"),
        pytest.param({"token": "t", "timeout": 301}, id="long-timeout"),
        pytest.param({"token": "t", "ca_bundle": "/nonexistent/ca.pem"}, id="missing-ca-bundle"),
        pytest.param({"token": "t", "namespace": "team/../root"}, id="namespace-escapes"),
        pytest.param({"token": "t", "namespace": "team a"}, id="namespace-with-a-space"),
        pytest.param({"token": "t", "url": "http://bao.example"}, id="plain-http"),
        pytest.param({"token": "t", "url": "https://user:pw@bao.example"}, id="credentials-in-the-url"),
    ],
)
def test_settings_refused_by_every_user(user: str, options: dict[str, object]) -> None:
    settings: dict[str, object] = {"url": URL, **options}
    with pytest.raises(ConfigError) as refused:
        USERS[user](**settings)
    assert str(refused.value).startswith("openbao: ")
    assert "pw" not in str(refused.value)


@pytest.mark.parametrize("user", USERS)
@pytest.mark.parametrize(
    "credentials",
    [{"token": TOKEN}, {"role_id": ROLE_ID, "secret_id": SECRET_ID}],
    ids=["token", "approle"],
)
def test_repr_shows_no_credential(user: str, credentials: dict[str, str]) -> None:
    shown = repr(USERS[user](url=URL, namespace="team/a", **credentials))
    assert all(value not in shown for value in credentials.values())
    assert "bao.example" in shown
    assert ("'token'" if "token" in credentials else "'approle'") in shown


# -- failures (no server) ------------------------------------------------------------------------------------


def hvac_error(kind: type[bao_errors.VaultError], *errors: str, path: str = "/v1/secret/data/app") -> Exception:
    error: Exception = kind(errors[0] if errors else None, errors=list(errors), method="GET", url=URL + path)
    return error


@pytest.mark.parametrize(
    ("error", "kind", "words"),
    [
        pytest.param(hvac_error(bao_errors.InvalidRequest, "bad"), "bad_request", "refused /v1/secret/data/app: bad"),
        pytest.param(hvac_error(bao_errors.InvalidRequest), "bad_request", "HTTP 400"),
        pytest.param(hvac_error(bao_errors.Forbidden, "permission denied"), "denied", "permission denied on /v1/"),
        pytest.param(hvac_error(bao_errors.Unauthorized), "denied", "permission denied on /v1/secret/data/app"),
        pytest.param(hvac_error(bao_errors.InvalidPath), "not_found", "has no /v1/secret/data/app"),
        pytest.param(hvac_error(bao_errors.VaultDown, "Vault is sealed"), "sealed", "is sealed"),
        pytest.param(hvac_error(bao_errors.VaultDown, "standby"), "status", "answered HTTP 503: standby"),
        pytest.param(hvac_error(bao_errors.RateLimitExceeded), "status", "answered HTTP 429 (rate limited)"),
        pytest.param(hvac_error(bao_errors.UnexpectedError), "status", "(a redirect?)"),
        pytest.param(hvac_error(bao_errors.ParamValidationError), "status", "answered an error"),
        pytest.param(requests.ConnectTimeout(), "timeout", "did not answer within 5 s"),
        pytest.param(requests.exceptions.SSLError(), "tls", "TLS to https://bao.example failed"),
        pytest.param(requests.ConnectionError(), "unreachable", "cannot connect to https://bao.example"),
        pytest.param(requests.exceptions.InvalidHeader(), "unreachable", "failed: InvalidHeader"),
        pytest.param(FileNotFoundError(2, "No such file"), "unreachable", "cannot reach https://bao.example"),
        pytest.param(Unexpected("no JSON 'data' object"), "unexpected", "unexpected answer from https://"),
    ],
)
def test_errors_become_failures(error: Exception, kind: str, words: str) -> None:
    failure = assert_safe(BaoClient(url=URL, token=TOKEN).attempt(raising(error)), TOKEN)
    assert failure.kind == kind
    assert words in failure.text
    assert URL in failure.text


@pytest.mark.parametrize(
    "credentials",
    [{"token": TOKEN}, {"role_id": ROLE_ID, "secret_id": SECRET_ID}],
    ids=["token", "approle"],
)
@pytest.mark.parametrize(
    "error",
    [
        pytest.param(hvac_error(bao_errors.InvalidRequest, f"bad {TOKEN} {ROLE_ID} {SECRET_ID}"), id="400"),
        pytest.param(hvac_error(bao_errors.InternalServerError, f"{TOKEN} {ROLE_ID} {SECRET_ID}"), id="500"),
        pytest.param(OSError(f"cannot read {TOKEN} {ROLE_ID} {SECRET_ID}"), id="os-error"),
        pytest.param(Unexpected(f"answer {TOKEN} {ROLE_ID} {SECRET_ID}"), id="unexpected"),
    ],
)
def test_a_credential_quoted_back_is_redacted(credentials: dict[str, str], error: Exception) -> None:
    client = BaoClient(url=URL, **credentials)  # type: ignore[arg-type]
    failure = assert_safe(client.attempt(raising(error)), *credentials.values())
    assert "[redacted]" in failure.text


def test_a_long_openbao_message_is_cut() -> None:
    failure = assert_safe(
        BaoClient(url=URL, token=TOKEN).attempt(raising(hvac_error(bao_errors.InvalidRequest, "x" * 5000)))
    )
    assert len(failure.message) == 300


def test_other_exceptions_pass_through() -> None:
    # The users' own refusals (ConfigError, InvalidCiphertext, ...) are theirs to word.
    client = BaoClient(url=URL, token=TOKEN)
    with pytest.raises(ConfigError, match="mine"):
        client.attempt(raising(ConfigError("mine")))
    assert client.attempt(lambda: 42) == 42  # and the lock was released


def test_an_abandoned_call_holding_the_lock_makes_the_next_one_busy() -> None:
    client = BaoClient(url=URL, token=TOKEN, timeout=0.2)
    entered, release = threading.Event(), threading.Event()

    def stuck() -> None:
        entered.set()
        release.wait(5.0)

    first = threading.Thread(target=client.attempt, args=(stuck,), daemon=True)
    first.start()
    assert entered.wait(5.0)
    failure = assert_safe(client.attempt(lambda: None))
    release.set()
    first.join(5.0)
    assert failure.kind == "busy"
    assert "still running" in failure.text


def test_json_object() -> None:
    assert json_object({"data": {"k": 1}}, "data") == {"k": 1}
    answers: list[object] = [None, [], {"data": "x"}, {"other": {}}]
    for answer in answers:
        with pytest.raises(Unexpected, match="no JSON 'data' object"):
            json_object(answer, "data")


# -- against OpenBao -----------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_approle_login_and_its_renewal_before_the_ttl_ends(bao: OpenBaoServer) -> None:
    role_id, secret_id = make_role(bao)
    clock = FakeClock()
    client = BaoClient(url=bao.url, role_id=role_id, secret_id=secret_id, allow_insecure_http=True, monotonic=clock)
    tokens: list[str] = []

    def whoami() -> None:
        client.authenticate()
        tokens.append(client.client.token)
        client.client.auth.token.lookup_self()

    assert client.attempt(whoami) is None
    assert client.attempt(whoami) is None  # the token is reused
    clock.now += 3600 * 0.9  # most of its one-hour TTL is gone
    assert client.attempt(whoami) is None
    assert tokens[0] == tokens[1] != tokens[2]
    assert all(secret not in repr(client) for secret in (role_id, secret_id, *tokens))
    client.close()


def test_approle_login_refused(bao: OpenBaoServer) -> None:
    role_id, secret_id = make_role(bao)
    wrong = f"{secret_id[:-4]}beef"
    client = BaoClient(url=bao.url, role_id=role_id, secret_id=wrong, allow_insecure_http=True)
    failure = assert_safe(client.attempt(client.authenticate), role_id, wrong, secret_id)
    assert failure.kind == "login_refused"
    assert failure.text == f"AppRole login refused by {bao.url} (role_id or secret_id rejected)"


def test_a_wrong_token_is_denied(bao: OpenBaoServer) -> None:
    client = BaoClient(url=bao.url, token="s.not-a-real-token", allow_insecure_http=True)
    failure = assert_safe(client.attempt(client.client.auth.token.lookup_self), "s.not-a-real-token")
    assert (failure.kind, failure.path) == ("denied", "/v1/auth/token/lookup-self")


def test_an_unreadable_ca_bundle(bao: OpenBaoServer, tmp_path: Path) -> None:
    # requests raises a plain OSError when the CA bundle vanished after the settings were checked.
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate")
    client = BaoClient(url=bao.url.replace("http:", "https:"), token=bao.root_token, ca_bundle=ca)
    ca.unlink()
    failure = assert_safe(client.attempt(client.client.auth.token.lookup_self), bao.root_token)
    assert failure.kind == "unreachable"
    assert "cannot reach" in failure.text
