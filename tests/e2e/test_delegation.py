"""End to end: each user reaches the upstream with their own credential, never the client's token.

The upstream records every request it receives. Two users calling the same upstream through the gateway
must arrive with two different credentials; a user without one is refused before anything goes upstream;
a sealed credential moved to another user's row opens for nobody; nothing stored holds a secret in the
clear; a shared service account is used only when named so, and announced at every start.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import orjson
import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from mcp_bastion.delegation.store import CredentialStore
from mcp_bastion.storage.models import UpstreamCredentialRow
from tests.e2e.gateway import RunningGateway, running_gateway
from tests.e2e.test_refusals import MODERN_HEADERS, call
from tests.helpers.recording import Recorder, recording_upstream

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

PASSWORD = "correct horse battery staple"


@pytest.fixture
async def upstream() -> AsyncIterator[Recorder]:
    async with recording_upstream() as recorder:
        yield recorder


def per_user(url: str) -> dict[str, object]:
    return {"url": url, "allow_insecure_http": True, "auth": {"mode": "static"}}


async def whoami(gw: RunningGateway, token: str) -> dict[str, object]:
    async with gw.http(token) as http:
        response = await http.post(
            gw.url("crm"), json=call("whoami", {}), headers={**MODERN_HEADERS, "mcp-name": "whoami"}
        )
    assert response.status_code == 200, response.text
    answer: dict[str, object] = response.json()
    return answer


async def user_token(gw: RunningGateway, name: str) -> tuple[str, str]:
    """A local user, and a token for them as the login would give one: (principal key, token)."""
    authorization = gw.gateway.authorization
    assert authorization is not None
    info = await authorization.users.add(name, PASSWORD, ["staff"])
    return f"{gw.base_url}\x1f{info.id}", gw.token(info.id, server="crm")


def store(gw: RunningGateway) -> CredentialStore:
    authorization = gw.gateway.authorization
    assert authorization is not None
    return CredentialStore(authorization.db, authorization.vault)


# The recording upstream's ``whoami`` echoes the credential it received; result inspection would redact
# it (as it should for a real tool), so these tests that read it back turn the secret scan off.
ECHOES_CREDENTIALS = {"secrets": "off"}


async def test_two_users_reach_the_upstream_with_their_own_credentials(tmp_path: Path, upstream: Recorder) -> None:
    async with running_gateway(tmp_path, {"crm": per_user(upstream.url)}, inspect=ECHOES_CREDENTIALS) as gw:
        alice_key, alice = await user_token(gw, "alice")
        bob_key, bob = await user_token(gw, "bob")
        _, carol = await user_token(gw, "carol")
        await store(gw).put("crm", alice_key, b"alice-secret-4711")
        await store(gw).put("crm", bob_key, b"bob-secret-0815")

        assert (await whoami(gw, alice))["result"]["content"][0]["text"] == "Bearer alice-secret-4711"  # type: ignore[index]
        assert (await whoami(gw, bob))["result"]["content"][0]["text"] == "Bearer bob-secret-0815"  # type: ignore[index]
        seen = len(upstream.requests)
        refused = await whoami(gw, carol)
        assert refused["error"]["data"]["reason"] == "upstream_credential_missing"  # type: ignore[index]
        assert len(upstream.requests) == seen  # nothing went upstream for carol
        # The client's token never arrives upstream, in any header.
        for headers in upstream.requests:
            for token in (alice, bob, carol):
                assert all(token not in value for value in headers.values())
        # At rest: neither the database, nor the key file, nor the audit log holds a secret in the clear.
        for path in (tmp_path / "state").rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                for secret in (b"alice-secret-4711", b"bob-secret-0815"):
                    assert secret not in data, path
                    assert base64.b64encode(secret) not in data, path
                    assert base64.urlsafe_b64encode(secret).rstrip(b"=") not in data, path


async def test_a_credential_moved_to_another_user_opens_for_nobody(tmp_path: Path, upstream: Recorder) -> None:
    async with running_gateway(tmp_path, {"crm": per_user(upstream.url)}) as gw:
        alice_key, _ = await user_token(gw, "alice")
        bob_key, bob = await user_token(gw, "bob")
        await store(gw).put("crm", alice_key, b"alice-secret-4711")
        await store(gw).put("crm", bob_key, b"bob-secret-0815")
        authorization = gw.gateway.authorization
        assert authorization is not None
        table = UpstreamCredentialRow
        async with authorization.db.read() as connection:
            alices = (await connection.execute(select(table.secret).where(table.principal == alice_key))).scalar_one()
        async with authorization.db.transaction() as connection:  # an attacker with database write access
            await connection.execute(update(table).where(table.principal == bob_key).values(secret=alices))
        fresh = CredentialStore(authorization.db, authorization.vault)  # no cache: read what the table holds
        with pytest.raises(Exception, match="invalid ciphertext"):
            await fresh.secret_for("crm", bob_key)
        answer = await whoami(gw, bob)  # bob never called before: the gateway reads the swapped row
        assert answer["error"]["data"]["reason"] == "upstream_credential_invalid"  # type: ignore[index]
        assert "alice-secret" not in str(answer)
        assert all("alice-secret" not in value for headers in upstream.requests for value in headers.values())


async def test_a_shared_service_account_is_named_and_announced(
    tmp_path: Path, upstream: Recorder, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CRM_SERVICE_KEY", "service-key-1")
    shared = {**per_user(upstream.url), "auth": {"mode": "static", "shared_service_account": "env:CRM_SERVICE_KEY"}}
    with caplog.at_level(logging.WARNING):
        async with running_gateway(tmp_path, {"crm": shared}) as gw:
            _, alice = await user_token(gw, "alice")
            assert (await whoami(gw, alice))["result"]["content"][0]["text"] == "Bearer service-key-1"  # type: ignore[index]
    assert any("shared_service_account" in record.getMessage() for record in caplog.records)


async def test_an_upstream_without_auth_gets_no_credential(tmp_path: Path, upstream: Recorder) -> None:
    async with running_gateway(tmp_path, {"crm": {"url": upstream.url, "allow_insecure_http": True}}) as gw:
        _, alice = await user_token(gw, "alice")
        assert (await whoami(gw, alice))["result"]["content"][0]["text"] == "(none)"  # type: ignore[index]


def test_the_cli_stores_a_credential_from_standard_input(tmp_path: Path) -> None:
    from mcp_bastion.cli.main import app

    path = tmp_path / "bastion.toml"
    path.write_text(
        f'[server]\nstate_dir = "{tmp_path / "state"}"\nport = 9443\n'
        '[upstreams.crm]\nurl = "https://crm.internal/mcp"\n[upstreams.crm.auth]\nmode = "static"\n'
    )
    runner = CliRunner()
    added = runner.invoke(app, ["users", "add", "alice", "-c", str(path), "--password-stdin"], input=PASSWORD + "\n")
    assert added.exit_code == 0, added.output
    stored = runner.invoke(app, ["credentials", "set", "crm", "--user", "alice", "-c", str(path)], input="s3cret\n")
    assert stored.exit_code == 0, stored.output
    listed = runner.invoke(app, ["credentials", "list", "-c", str(path)])
    assert listed.exit_code == 0, listed.output
    assert "crm" in listed.output
    assert "s3cret" not in listed.output
    missing = runner.invoke(app, ["credentials", "set", "crm", "--user", "nobody", "-c", str(path)], input="x\n")
    assert missing.exit_code == 1
    removed = runner.invoke(app, ["credentials", "remove", "crm", "--user", "alice", "-c", str(path)])
    assert removed.exit_code == 0, removed.output
    # Disabling a user deletes their upstream credentials with their grants.
    runner.invoke(app, ["credentials", "set", "crm", "--user", "alice", "-c", str(path)], input="again\n")
    disabled = runner.invoke(app, ["users", "disable", "alice", "-c", str(path)])
    assert "deleted 1 upstream credential(s)" in disabled.output, disabled.output
    assert "crm" not in runner.invoke(app, ["credentials", "list", "-c", str(path)]).output


# -- RFC 8693 token exchange, with the gateway's own authorization server as the upstream's --------------


def exchange_client(tmp_path: Path, *, token_exchange: bool = True) -> tuple[str, str]:
    """A confidential client registered before the gateway starts (as an operator would)."""
    from mcp_bastion.cli.main import app

    path = tmp_path / "clients.toml"
    path.write_text(
        f'[server]\nstate_dir = "{tmp_path / "state"}"\n[upstreams.crm]\nurl = "https://crm.internal/mcp"\n'
    )
    grant = ["--token-exchange"] if token_exchange else ["--client-credentials"]
    added = CliRunner().invoke(app, ["clients", "add", "--name", "gateway", "--confidential", *grant, "-c", str(path)])
    assert added.exit_code == 0, added.output
    client_id = added.output.split("client_id: ")[1].split()[0]
    secret = added.output.split("client_secret: ")[1].split()[0]
    return client_id, secret


def exchanging(recorder: Recorder, client_id: str, tmp_path: Path) -> Callable[[str], dict[str, dict[str, object]]]:
    def upstreams(base: str) -> dict[str, dict[str, object]]:
        auth = {
            "mode": "token_exchange",
            "token_endpoint": f"{base}/oauth/token",
            "client_id": client_id,
            "client_secret": "env:EXCHANGE_SECRET",
            "scopes": ["crm.read"],
            "ca_bundle": str(tmp_path / "state" / "tls" / "ca.crt"),
        }
        return {"crm": {"url": recorder.url, "allow_insecure_http": True, "auth": auth}}

    return upstreams


def claims_of(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    value: dict[str, object] = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return value


async def test_token_exchange_gives_each_user_a_narrow_token_for_the_upstream(
    tmp_path: Path, upstream: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    client_id, secret = await anyio.to_thread.run_sync(exchange_client, tmp_path)
    monkeypatch.setenv("EXCHANGE_SECRET", secret)
    oauth = {"token_exchange_audiences": {upstream.url: ["crm.read", "crm.write"]}}
    upstreams = exchanging(upstream, client_id, tmp_path)
    async with running_gateway(tmp_path, upstreams, oauth=oauth, inspect=ECHOES_CREDENTIALS) as gw:
        _, alice = await user_token(gw, "alice")
        _, bob = await user_token(gw, "bob")
        sent = {}
        for name, token in (("alice", alice), ("bob", bob)):
            text = (await whoami(gw, token))["result"]["content"][0]["text"]  # type: ignore[index]
            assert text.startswith("Bearer ")
            sent[name] = text.removeprefix("Bearer ")
            assert sent[name] != token  # never the user's own token
        for name, token in (("alice", alice), ("bob", bob)):
            exchanged, own = claims_of(sent[name]), claims_of(token)
            assert exchanged["sub"] == own["sub"]  # the same user ...
            assert exchanged["aud"] == upstream.url  # ... for the upstream only ...
            assert exchanged["scope"] == "crm.read"  # ... with the narrowest scope asked for ...
            assert exchanged["act"] == {"sub": client_id}  # ... and the gateway named as the actor
            assert float(str(exchanged["exp"])) <= float(str(own["exp"]))  # never outliving the user's token
        assert sent["alice"] != sent["bob"]
        # The exchanged token is worthless at the gateway itself: its audience is the upstream.
        async with gw.http(sent["alice"]) as http:
            laundered = await http.post(gw.url("crm"), json=call("whoami", {}), headers=MODERN_HEADERS)
        assert laundered.status_code == 401
        # One exchange serves a burst of calls.
        calls = len(upstream.requests)
        await whoami(gw, alice)
        assert len(upstream.requests) == calls + 1


async def test_a_client_without_the_exchange_grant_is_refused(
    tmp_path: Path, upstream: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    client_id, secret = await anyio.to_thread.run_sync(lambda: exchange_client(tmp_path, token_exchange=False))
    monkeypatch.setenv("EXCHANGE_SECRET", secret)
    oauth = {"token_exchange_audiences": {upstream.url: ["crm.read"]}}
    async with running_gateway(tmp_path, exchanging(upstream, client_id, tmp_path), oauth=oauth) as gw:
        _, alice = await user_token(gw, "alice")
        calls = len(upstream.requests)
        refused = await whoami(gw, alice)
        assert refused["error"]["data"]["reason"] == "upstream_token_exchange_refused"  # type: ignore[index]
        assert len(upstream.requests) == calls
        assert "unauthorized_client" in str(gw.audit()[-1]["detail"])
