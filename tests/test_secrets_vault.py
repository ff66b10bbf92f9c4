"""``vault:<mount>/<path>#<key>`` secret references (``mcp_bastion.secrets``, ``mcp_bastion.vault.kv``) against
a real OpenBao dev server (``tests/helpers/openbao.py``): KV v2 and v1, nested mounts, AppRole, TLS, the
refusals (each names the setting, none shows a secret), one read per secret, and the gateway built from
settings that refer to OpenBao.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import pytest
import requests

from mcp_bastion.app import build_gateway
from mcp_bastion.audit.sink import MemorySink
from mcp_bastion.errors import ConfigError
from mcp_bastion.exchange import Principal
from mcp_bastion.oauth import registration
from mcp_bastion.secrets import KVReader, kv_reader, resolve_reference
from mcp_bastion.settings import Settings, parse_settings
from mcp_bastion.upstream.http import HTTPUpstream
from mcp_bastion.vault.kv import OpenBaoKV
from mcp_bastion.web import kek_backend
from tests.helpers.openbao import OpenBaoServer, free_port_pair, openbao_server

SETTING: Final = "upstreams.crm.auth.shared_service_account"
PASSWORD: Final = "s3cret-pa55word"
UPSTREAM: Final = {"url": "http://127.0.0.1:9/mcp", "allow_insecure_http": True}


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBaoServer]:
    directory = tmp_path_factory.mktemp("openbao")
    with openbao_server(directory) as server:
        server.api("POST", "sys/auth/approle", {"type": "approle"})
        server.api("POST", "sys/mounts/kv1", {"type": "kv", "options": {"version": "1"}})
        server.api("POST", "sys/mounts/team/kv", {"type": "kv", "options": {"version": "2"}})
        server.api("POST", "secret/data/app/db", {"data": {"password": PASSWORD, "user": "app", "port": 5432}})
        yield server


def token_for(server: OpenBaoServer, rules: str, **options: object) -> str:
    """A token with a policy of ``rules``; ``num_uses=1``: OpenBao refuses its second read (the mount lookup
    does not count), which proves a secret was read once."""
    policy = f"p-{unique()}"
    server.api("PUT", f"sys/policies/acl/{policy}", {"policy": rules})
    auth = server.api("POST", "auth/token/create", {"policies": [policy], **options})["auth"]
    assert isinstance(auth, dict)
    token = auth["client_token"]
    assert isinstance(token, str)
    return token


READ_SECRETS: Final = 'path "secret/data/*" { capabilities = ["read"] }'


def unique() -> str:
    return uuid.uuid4().hex[:12]


def settings_for(server: OpenBaoServer | None, **openbao: object) -> Settings:
    data: dict[str, object] = {"upstreams": {"crm": UPSTREAM}}
    if server is not None:
        section: dict[str, object] = {"url": server.url, "allow_insecure_http": True, "timeout": 5.0}
        section.update(openbao)
        if "role_id" not in openbao and "token" not in openbao:
            section["token"] = server.root_token
        data["vault"] = {"openbao": section}
    return parse_settings(data)


def reader(server: OpenBaoServer, **openbao: object) -> KVReader:
    kv = kv_reader(settings_for(server, **openbao))
    assert kv is not None
    return kv


def refusal(value: str, kv: KVReader | None, setting: str = SETTING) -> str:
    """The message of the ConfigError resolving ``value`` raises; it carries no foreign exception."""
    with pytest.raises(ConfigError) as caught:
        resolve_reference(value, setting, kv=kv)
    error = caught.value
    assert error.__cause__ is None
    assert error.__context__ is None
    message = str(error)
    assert message.startswith(f"{setting}: ")
    assert PASSWORD not in message
    assert PASSWORD not in repr(error)
    return message


class NoReads:
    """A reader that must not be asked (the reference is refused before any request)."""

    def read(self, path: str) -> Mapping[str, object]:
        raise AssertionError(f"read({path!r}) was called")


# -- reading ---------------------------------------------------------------------------------------------


def test_a_kv2_reference_resolves(bao: OpenBaoServer) -> None:
    assert resolve_reference("vault:secret/app/db#password", SETTING, kv=reader(bao)) == PASSWORD


def test_a_kv1_reference_resolves(bao: OpenBaoServer) -> None:
    name = unique()
    bao.api("POST", f"kv1/{name}/db", {"password": "v1-password"})
    assert resolve_reference(f"vault:kv1/{name}/db#password", SETTING, kv=reader(bao)) == "v1-password"


def test_a_nested_mount_is_found(bao: OpenBaoServer) -> None:
    name = unique()
    bao.api("POST", f"team/kv/data/{name}", {"data": {"token": "nested-token"}})
    assert resolve_reference(f"vault:team/kv/{name}#token", SETTING, kv=reader(bao)) == "nested-token"


def test_the_latest_kv2_version_is_read(bao: OpenBaoServer) -> None:
    name = unique()
    bao.api("POST", f"secret/data/{name}", {"data": {"k": "old"}})
    bao.api("POST", f"secret/data/{name}", {"data": {"k": "new"}})
    assert resolve_reference(f"vault:secret/{name}#k", SETTING, kv=reader(bao)) == "new"


def test_each_secret_is_read_once_per_reader(bao: OpenBaoServer) -> None:
    name = unique()
    bao.api("POST", f"secret/data/{name}", {"data": {"a": "alpha", "b": "beta"}})
    kv = reader(bao, token=token_for(bao, READ_SECRETS, num_uses=1))
    values = [resolve_reference(f"vault:secret/{name}#{key}", f"s{i}", kv=kv) for i, key in enumerate("ab" * 5)]
    assert values == ["alpha", "beta"] * 5
    # Kept for this reader's life (one startup): gone from OpenBao, still the value read at the start...
    bao.api("DELETE", f"secret/metadata/{name}")
    assert resolve_reference(f"vault:secret/{name}#a", SETTING, kv=kv) == "alpha"
    # ... while a new reader (the next startup) sees that it is gone.
    assert "has no secret" in refusal(f"vault:secret/{name}#a", reader(bao))


def test_the_mount_is_looked_up_once(bao: OpenBaoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = unique(), unique()
    for name in (first, second):
        bao.api("POST", f"secret/data/{name}", {"data": {"k": name}})
    sent: list[str] = []
    send = requests.Session.send

    def recording(session: requests.Session, request: requests.PreparedRequest, **options: Any) -> Any:
        sent.append(urlsplit(request.url or "").path)
        return send(session, request, **options)

    monkeypatch.setattr(requests.Session, "send", recording)
    kv = reader(bao)
    assert resolve_reference(f"vault:secret/{first}#k", SETTING, kv=kv) == first
    assert resolve_reference(f"vault:secret/{second}#k", SETTING, kv=kv) == second
    assert resolve_reference(f"vault:secret/{first}#k", SETTING, kv=kv) == first
    assert sent == [
        f"/v1/sys/internal/ui/mounts/secret/{first}",
        f"/v1/secret/data/{first}",
        f"/v1/secret/data/{second}",
    ]


def test_approle(bao: OpenBaoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    role_id, secret_id = make_role(bao, 'path "secret/data/app/db" { capabilities = ["read"] }')
    monkeypatch.setenv("TEST_BAO_SECRET_ID", secret_id)
    kv = reader(bao, role_id=role_id, secret_id="env:TEST_BAO_SECRET_ID")
    assert resolve_reference("vault:secret/app/db#password", SETTING, kv=kv) == PASSWORD
    # The policy grants that one secret only.
    message = refusal("vault:secret/app/other#password", kv)
    assert "permission denied" in message
    assert secret_id not in message
    assert role_id not in message


def test_an_approle_login_refused(bao: OpenBaoServer) -> None:
    role_id, _ = make_role(bao, 'path "secret/data/app/db" { capabilities = ["read"] }')
    wrong = f"{uuid.uuid4()}"
    message = refusal("vault:secret/app/db#password", reader(bao, role_id=role_id, secret_id=wrong))
    assert "AppRole login refused" in message
    assert wrong not in message
    assert role_id not in message


def test_over_tls_with_the_ca_bundle(tmp_path: Path) -> None:
    with openbao_server(tmp_path / "bao", tls=True) as server:
        server.api("POST", "secret/data/tls", {"data": {"k": "over-tls"}})
        settings = settings_for(server, ca_bundle=str(server.ca_bundle), allow_insecure_http=False)
        assert resolve_reference("vault:secret/tls#k", SETTING, kv=kv_reader(settings)) == "over-tls"
        # Without the dev CA the certificate is not trusted: no fallback to the system roots or to VAULT_CACERT.
        untrusting = kv_reader(settings_for(server, allow_insecure_http=False))
        assert "TLS" in refusal("vault:secret/tls#k", untrusting)


# -- refusals --------------------------------------------------------------------------------------------


def test_a_missing_secret(bao: OpenBaoServer) -> None:
    message = refusal("vault:secret/app/nothing-here#password", reader(bao))
    assert "vault:secret/app/nothing-here#password" in message
    assert "has no secret at secret/app/nothing-here" in message


def test_a_missing_secret_on_kv1(bao: OpenBaoServer) -> None:
    assert "has no secret at kv1/nothing" in refusal("vault:kv1/nothing#k", reader(bao))


def test_a_missing_key(bao: OpenBaoServer) -> None:
    message = refusal("vault:secret/app/db#pasword", reader(bao))
    assert "vault:secret/app/db#pasword" in message
    assert "no key 'pasword'" in message
    assert "app" not in message.split("no key")[1]  # the other keys' values are not listed either


def test_a_value_that_is_not_a_string(bao: OpenBaoServer) -> None:
    message = refusal("vault:secret/app/db#port", reader(bao))
    assert "not a string" in message
    assert "5432" not in message


def test_an_empty_value(bao: OpenBaoServer) -> None:
    name = unique()
    bao.api("POST", f"secret/data/{name}", {"data": {"k": ""}})
    assert "is empty" in refusal(f"vault:secret/{name}#k", reader(bao))


def test_no_kv_engine_at_that_path(bao: OpenBaoServer) -> None:
    # The root token may do anything: OpenBao says there is nothing mounted (a policy-bound token would be
    # refused the same way: the message says both).
    assert "no KV engine is mounted" in refusal("vault:nomount/app#k", reader(bao))


def test_an_engine_that_is_not_kv(bao: OpenBaoServer) -> None:
    assert "'transit' engine, not KV" in refusal("vault:transit/keys#k", reader(bao))


def test_the_mount_itself(bao: OpenBaoServer) -> None:
    assert "the KV mount itself" in refusal("vault:team/kv#k", reader(bao))


def test_permission_denied(bao: OpenBaoServer) -> None:
    token = token_for(bao, 'path "secret/data/public" { capabilities = ["read"] }')
    message = refusal("vault:secret/app/db#password", reader(bao, token=token))
    assert "permission denied" in message
    assert token not in message


@pytest.mark.parametrize(
    "value",
    [
        "vault:nohash",
        "vault:#k",
        "vault:secret#k",
        "vault:secret/app/db#",
        "vault:secret/app/db",
        "vault:/secret/app#k",
        "vault:secret//app#k",
        "vault:secret/app/#k",
        "vault:secret/../sys/x#k",
        "vault:secret/./x#k",
        "vault:secret/a b#k",
        "vault:secret/a?list=true#k",
        "vault:secret/a%2e#k",
        "vault:secret/a#k\n",
        f"vault:v1:{PASSWORD}",  # a literal that starts with "vault:" (a Transit ciphertext) is not shown
    ],
)
def test_bad_syntax(value: str) -> None:
    message = refusal(value, NoReads())
    assert "not a valid vault: reference" in message
    assert "vault:<mount>/<path>#<key>" in message
    assert value not in message


def test_without_an_openbao_section() -> None:
    assert kv_reader(settings_for(None)) is None
    message = refusal("vault:secret/app/db#password", None)
    assert "[vault.openbao]" in message


@pytest.mark.parametrize("setting", ["vault.openbao.token", "vault.openbao.secret_id"])
def test_the_openbao_credentials_cannot_come_from_openbao(setting: str) -> None:
    assert "cannot be a vault: reference" in refusal("vault:secret/bao#token", NoReads(), setting)


def test_an_openbao_token_that_is_a_vault_reference(bao: OpenBaoServer, tmp_path: Path) -> None:
    # As the KV reader's own credential ...
    message = refusal("vault:secret/app/db#password", reader(bao, token="vault:secret/bao#token"))
    assert "vault.openbao.token: cannot be a vault: reference" in message
    # ... and as the Transit backend's.
    settings = parse_settings(
        {
            "server": {"state_dir": str(tmp_path / "state")},
            "upstreams": {"crm": UPSTREAM},
            "vault": {
                "backend": "openbao",
                "openbao": {"url": bao.url, "token": "vault:secret/bao#token", "allow_insecure_http": True},
            },
        }
    )
    with pytest.raises(ConfigError, match=r"^vault\.openbao\.token: cannot be a vault: reference"):
        kek_backend(settings)


def test_an_unset_token_reference(bao: OpenBaoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_BAO_UNSET", raising=False)
    kv = reader(bao, token="env:TEST_BAO_UNSET")  # nothing is resolved before a vault: reference needs it
    message = refusal("vault:secret/app/db#password", kv)
    assert "vault.openbao.token: environment variable 'TEST_BAO_UNSET' is not set" in message


def test_openbao_unreachable() -> None:
    port = free_port_pair()
    settings = parse_settings(
        {
            "upstreams": {"crm": UPSTREAM},
            "vault": {"openbao": {"url": f"http://127.0.0.1:{port}", "token": "t0ken", "allow_insecure_http": True}},
        }
    )
    message = refusal("vault:secret/app/db#password", kv_reader(settings))
    assert f"cannot connect to http://127.0.0.1:{port}" in message
    assert "vault:secret/app/db#password" in message


def test_openbao_silent_is_bounded_by_the_timeout() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # accepts connections (the kernel does) and never answers
        port = listener.getsockname()[1]
        kv = OpenBaoKV(url=f"http://127.0.0.1:{port}", token="t0ken", timeout=0.5, allow_insecure_http=True)
        started = time.monotonic()
        message = refusal("vault:secret/app/db#password", kv)
        elapsed = time.monotonic() - started
        time.sleep(0.7)  # the worker, if abandoned, ends on its own socket timeout before the socket closes
    assert "did not answer within 0.5 s" in message
    assert elapsed < 2.0


def test_plain_http_to_a_remote_host_is_refused() -> None:
    settings = parse_settings(
        {
            "upstreams": {"crm": UPSTREAM},
            "vault": {"openbao": {"url": "http://bao.example:8200", "token": "t0ken", "allow_insecure_http": True}},
        }
    )
    assert "plain http is allowed to a loopback address only" in refusal("vault:secret/a#k", kv_reader(settings))


def test_the_reader_shows_no_credential(bao: OpenBaoServer) -> None:
    kv = OpenBaoKV(url=bao.url, token=bao.root_token, allow_insecure_http=True)
    assert bao.root_token not in repr(kv)
    assert bao.root_token not in repr(reader(bao))


# -- the gateway -----------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_gateway_resolves_vault_references(
    bao: OpenBaoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = unique()
    bao.api("POST", f"secret/data/{name}", {"data": {"key": "crm-api-key", "registration": "reg-token"}})
    # A token good for one read: two settings, one secret, one read for the whole startup.
    monkeypatch.setenv("TEST_BAO_TOKEN", token_for(bao, READ_SECRETS, num_uses=1))
    settings = parse_settings(
        {
            "server": {"host": "127.0.0.1", "port": 9443, "state_dir": str(tmp_path / "state")},
            "oauth": {"registration": "token", "registration_token": f"vault:secret/{name}#registration"},
            "upstreams": {
                "crm": {**UPSTREAM, "auth": {"mode": "static", "shared_service_account": f"vault:secret/{name}#key"}}
            },
            # The KEKs stay in the local key file: [vault.openbao] serves only the vault: references here.
            "vault": {
                "backend": "file",
                "openbao": {"url": bao.url, "token": "env:TEST_BAO_TOKEN", "allow_insecure_http": True},
            },
        }
    )
    gateway = build_gateway(settings, audit=MemorySink())
    try:
        upstream = gateway.upstreams["crm"]
        assert isinstance(upstream, HTTPUpstream)
        headers = await upstream.auth.headers(Principal("alice", "https://issuer", "bearer"))
        assert headers == [(b"authorization", b"Bearer crm-api-key")]
        assert gateway.authorization is not None
        assert gateway.authorization.server._initial_tokens == {registration.secret_hash("reg-token")}
    finally:
        assert gateway.authorization is not None
        await gateway.authorization.db.aclose()


def test_the_gateway_does_not_start_without_its_secret(bao: OpenBaoServer, tmp_path: Path) -> None:
    settings = parse_settings(
        {
            "server": {"host": "127.0.0.1", "port": 9443, "state_dir": str(tmp_path / "state")},
            "oauth": {"enabled": False},
            "upstreams": {
                "crm": {**UPSTREAM, "auth": {"mode": "static", "shared_service_account": "vault:secret/crm-gone#key"}}
            },
            "vault": {"openbao": {"url": bao.url, "token": bao.root_token, "allow_insecure_http": True}},
        }
    )
    with pytest.raises(ConfigError) as caught:
        build_gateway(settings, audit=MemorySink())
    assert str(caught.value).startswith(f"{SETTING}: cannot read vault:secret/crm-gone#key: ")


# -- helpers ---------------------------------------------------------------------------------------------


def make_role(server: OpenBaoServer, rules: str) -> tuple[str, str]:
    """An AppRole with a policy of ``rules``; returns (role_id, secret_id)."""
    name = f"r-{unique()}"
    server.api("PUT", f"sys/policies/acl/{name}", {"policy": rules})
    server.api("POST", f"auth/approle/role/{name}", {"token_policies": ["default", name], "token_ttl": "5m"})
    role_id = server.data("GET", f"auth/approle/role/{name}/role-id")["role_id"]
    secret_id = server.data("POST", f"auth/approle/role/{name}/secret-id")["secret_id"]
    assert isinstance(role_id, str)
    assert isinstance(secret_id, str)
    return role_id, secret_id
