"""End to end: the policy's refusals over real HTTPS, the authorization server's scope grants, rate limits,
and the policy replaced under traffic.

Each refusal is tried for real and must fail with the right status, headers, JSON-RPC error and audit
record; nothing refused reaches the upstream.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from mcp_bastion.app import build_gateway
from mcp_bastion.cli.demo import DEMO_ARGUMENTS, DEMO_POLICY, SCOPES
from mcp_bastion.errors import ConfigError
from mcp_bastion.settings import parse_settings
from tests.e2e.browserless import log_in_and_consent
from tests.e2e.gateway import RunningGateway, running_gateway
from tests.e2e.test_refusals import MODERN_HEADERS, call
from tests.helpers.redis import redis_server

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

PASSWORD = "correct horse battery staple"
NO_LIMITS = {"per_user": None, "per_client": None, "per_tool": None}
CUSTOMERS = [sys.executable, "-m", "mcp_bastion.demo.customers", "--stdio"]


def demo_policy(**rate_limits: str | None) -> dict[str, object]:
    return {
        "files": [str(DEMO_POLICY)],
        "arguments": DEMO_ARGUMENTS,
        "rate_limits": {**NO_LIMITS, **rate_limits},
    }


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    upstream = {"command": CUSTOMERS, "scopes": SCOPES}
    async with running_gateway(tmp_path, {"customers": upstream}, policy=demo_policy()) as running:
        yield running


def token(gw: RunningGateway, user: str, roles: list[str], scopes: list[str]) -> str:
    signer = gw.gateway.local_issuer
    assert signer is not None
    extra = {"roles": roles, "preferred_username": user}
    return signer.mint(user, gw.url("customers"), scope=scopes, client_id="enforcement", extra=extra)


def tool_call(name: str, arguments: dict[str, object]) -> tuple[dict[str, object], dict[str, str]]:
    body = call(name, arguments)
    return body, {**MODERN_HEADERS, "mcp-name": name}


async def post(gw: RunningGateway, bearer: str, name: str, arguments: dict[str, object]) -> httpx2.Response:
    body, headers = tool_call(name, arguments)
    async with gw.http(bearer) as http:
        return await http.post(gw.url("customers"), json=body, headers=headers)


def last_call(gw: RunningGateway) -> dict[str, object]:
    return [record for record in gw.audit() if record.get("method") == "tools/call"][-1]


async def test_policy_denial_is_a_jsonrpc_error_and_audited_with_the_deciding_policy(gw: RunningGateway) -> None:
    alice = token(gw, "alice", ["analyst"], ["customers.read"])
    response = await post(gw, alice, "export_report", {"region": "apac"})
    assert response.status_code == 200
    error = response.json()["error"]
    assert (error["code"], error["data"]["reason"]) == (-32001, "policy_denied")
    assert "analyst-no-apac" not in response.text  # which rule decided is for the audit log only
    record = last_call(gw)
    assert (record["decision"], record["reason"]) == ("deny", "policy_forbid")
    assert record["policies"] == ["analyst-no-apac"]
    assert record["policy_version"]


async def test_missing_scope_is_403_with_a_step_up_challenge(gw: RunningGateway) -> None:
    bob = token(gw, "bob", ["admin"], ["customers.read"])
    response = await post(gw, bob, "update_customer_email", {"customer_id": "C002", "email": "x@example.com"})
    assert response.status_code == 403
    challenge = response.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge
    assert 'scope="customers.write"' in challenge
    assert "resource_metadata=" in challenge
    assert response.json()["error"]["data"]["reason"] == "insufficient_scope"
    assert (last_call(gw)["decision"], last_call(gw)["reason"]) == ("deny", "insufficient_scope")


async def test_an_unknown_user_or_role_gets_nothing_not_even_a_list(gw: RunningGateway) -> None:
    stranger = token(gw, "mallory", ["intern"], ["customers.read", "customers.write", "customers.delete"])
    async with gw.http(stranger) as http:
        client = Client(streamable_http_client(gw.url("customers"), http_client=http), mode="auto")
        async with client:
            with pytest.raises(Exception, match="not permitted by policy"):
                await client.list_tools()
    response = await post(gw, stranger, "get_customer", {"customer_id": "C001"})
    assert response.json()["error"]["data"]["reason"] == "policy_denied"
    assert last_call(gw)["reason"] == "policy_no_permit"


async def test_lists_of_resources_and_prompts_follow_the_scope_too(gw: RunningGateway) -> None:
    for scopes, expected in ((["customers.read"], 1), ([], 0)):
        alice = token(gw, "alice", ["analyst"], scopes)
        async with gw.http(alice) as http:
            async with Client(streamable_http_client(gw.url("customers"), http_client=http), mode="auto") as client:
                assert len((await client.list_resources()).resources) == expected
                assert len((await client.list_prompts()).prompts) == expected
                assert len((await client.list_tools()).tools) == 3 * expected  # the three read-only tools


async def test_arguments_policies_cannot_read_are_refused_when_unrepresentable(gw: RunningGateway) -> None:
    alice = token(gw, "alice", ["analyst"], ["customers.read"])
    # customer_id is declared String: 1.5 has no Cedar value at all, so the call is refused as invalid.
    response = await post(gw, alice, "get_customer", {"customer_id": 1.5})
    assert response.json()["error"]["code"] == -32602
    assert last_call(gw)["reason"] == "argument_not_representable"


# -- the authorization server grants only what the policy permits ------------------------------------


async def authorize(gw: RunningGateway, scope: str) -> tuple[str, str, str]:
    redirect = "http://127.0.0.1:9/callback"
    async with httpx2.AsyncClient(verify=gw.client_ssl()) as http:
        registered = await http.post(
            f"{gw.base_url}/oauth/register",
            json={"client_name": "Grant Test", "redirect_uris": [redirect], "token_endpoint_auth_method": "none"},
        )
    assert registered.status_code == 201, registered.text
    client_id = registered.json()["client_id"]
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect,
        "state": "s",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "resource": gw.url("customers"),
        "scope": scope,
    }
    return f"{gw.base_url}/authorize?{urlencode(query)}", client_id, verifier


@pytest.mark.parametrize(
    ("user", "roles", "granted"),
    [
        ("alice", ["analyst"], {"customers.read"}),
        ("bob", ["admin"], {"customers.read", "customers.write", "customers.delete"}),
        ("carol", [], None),
    ],
)
async def test_the_authorization_server_grants_only_permitted_scopes(
    gw: RunningGateway, user: str, roles: list[str], granted: set[str] | None
) -> None:
    authorization = gw.gateway.authorization
    assert authorization is not None
    await authorization.users.add(user, PASSWORD, roles)
    url, client_id, verifier = await authorize(gw, "customers.read customers.write customers.delete")
    back = await log_in_and_consent(url, username=user, password=PASSWORD, ca=gw.client_ssl())
    if granted is None:
        assert back.params["error"] == "access_denied"
        return
    async with httpx2.AsyncClient(verify=gw.client_ssl()) as http:
        answer = await http.post(
            f"{gw.base_url}/oauth/token",
            data={
                "grant_type": "authorization_code",
                "code": back.params["code"],
                "redirect_uri": "http://127.0.0.1:9/callback",
                "client_id": client_id,
                "code_verifier": verifier,
                "resource": gw.url("customers"),
            },
        )
    assert answer.status_code == 200, answer.text
    assert set(answer.json()["scope"].split()) == granted
    # The token names the user and roles the policy then sees: the call is decided for that user.
    response = await post(gw, answer.json()["access_token"], "get_customer", {"customer_id": "C001"})
    assert response.status_code == 200
    assert "error" not in response.json()
    assert last_call(gw)["principal"] != user  # the subject is the user's opaque id ...
    assert last_call(gw)["policies"] in (["analyst-read-only-tools"], ["admin-everything"])  # ... decided by role


# -- empty, broken and failing policies ---------------------------------------------------------------


async def test_an_empty_policy_set_denies_everything(tmp_path: Path) -> None:
    empty = tmp_path / "empty.cedar"
    empty.write_text("// nothing permitted yet\n")
    policy = {"files": [str(empty)], "rate_limits": NO_LIMITS}
    async with running_gateway(tmp_path, {"customers": {"command": CUSTOMERS}}, policy=policy) as gw:
        everyone = token(gw, "bob", ["admin"], [])
        response = await post(gw, everyone, "get_customer", {"customer_id": "C001"})
        assert response.json()["error"]["data"]["reason"] == "policy_denied"
        assert last_call(gw)["reason"] == "policy_no_permit"


def test_a_malformed_policy_stops_startup(tmp_path: Path) -> None:
    broken = tmp_path / "broken.cedar"
    broken.write_text('permit(principal, action == Action::"tools/call", resource) when { resource.readonly };\n')
    settings = parse_settings(
        {
            "server": {"state_dir": str(tmp_path / "state")},
            "upstreams": {"customers": {"command": CUSTOMERS}},
            "policy": {"files": [str(broken)]},
        }
    )
    with pytest.raises(ConfigError, match=r"broken.cedar: .*readonly"):
        build_gateway(settings)


async def test_a_policy_that_errors_at_run_time_fails_closed(tmp_path: Path) -> None:
    # Cedar skips a policy whose evaluation errors; for a forbid that would mean "allowed". Not here.
    rules = tmp_path / "overflow.cedar"
    rules.write_text(
        "permit(principal, action, resource);\n"
        '@id("overflowing-forbid")\n'
        'forbid(principal, action == Action::"tools/call", resource)\n'
        "when { context has arguments && context.arguments has limit\n"
        "       && context.arguments.limit + 9223372036854775807 > 0 };\n"
    )
    policy = {"files": [str(rules)], "arguments": {"limit": "Long"}, "rate_limits": NO_LIMITS}
    async with running_gateway(tmp_path, {"customers": {"command": CUSTOMERS}}, policy=policy) as gw:
        anyone = token(gw, "bob", [], [])
        response = await post(gw, anyone, "search_customers", {"query": "", "limit": 5})
        assert response.json()["error"]["data"]["reason"] == "policy_denied"
        record = last_call(gw)
        assert record["reason"] == "policy_error"
        assert "overflow" in str(record["detail"])


# -- rate limits ------------------------------------------------------------------------------------------


async def test_rate_limits_answer_429_with_retry_after(tmp_path: Path) -> None:
    upstream = {"command": CUSTOMERS, "scopes": SCOPES}
    policy = demo_policy(per_tool="3/minute")
    async with running_gateway(tmp_path, {"customers": upstream}, policy=policy) as gw:
        alice = token(gw, "alice", ["analyst"], ["customers.read"])
        statuses = [(await post(gw, alice, "get_customer", {"customer_id": "C001"})).status_code for _ in range(3)]
        assert statuses == [200, 200, 200]
        refused = await post(gw, alice, "get_customer", {"customer_id": "C001"})
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"]["data"]["reason"] == "rate_limited_tool"
        assert last_call(gw)["reason"] == "rate_limited_tool"
        # Another tool, and another user, have buckets of their own.
        assert (await post(gw, alice, "search_customers", {"query": ""})).status_code == 200
        bob = token(gw, "bob", ["admin"], ["customers.read"])
        assert (await post(gw, bob, "get_customer", {"customer_id": "C001"})).status_code == 200


# -- the policy replaced under traffic ----------------------------------------------------------------------


PERMIT_GET = '@id("v-get") permit(principal, action, resource);\n'
FORBID_GET = (
    '@id("v-all") permit(principal, action, resource);\n'
    '@id("v-no-get") forbid(principal, action == Action::"tools/call", resource)\n'
    '  when { resource.name == "get_customer" };\n'
)


async def test_hot_reload_under_traffic_never_mixes_two_policies(tmp_path: Path) -> None:
    rules = tmp_path / "live.cedar"
    rules.write_text(PERMIT_GET)
    policy = {"files": [str(rules)], "rate_limits": NO_LIMITS, "watch": False}
    async with running_gateway(tmp_path, {"customers": {"command": CUSTOMERS}}, policy=policy) as gw:
        store = gw.gateway.policy
        assert store is not None
        expected = {store.engine.version: "allow"}
        anyone = token(gw, "bob", [], [])
        stop = anyio.Event()
        answered = 0

        async def traffic() -> None:
            nonlocal answered
            async with gw.http(anyone) as http:
                while not stop.is_set():
                    body, headers = tool_call("get_customer", {"customer_id": "C001"})
                    response = await http.post(gw.url("customers"), json=body, headers=headers)
                    assert response.status_code == 200
                    answered += 1

        with anyio.fail_after(60):
            async with anyio.create_task_group() as group:
                for _ in range(4):
                    group.start_soon(traffic)
                for round_ in range(10):
                    seen = answered
                    while answered < seen + 3:  # some traffic under each policy before the next swap
                        await anyio.sleep(0.01)
                    text = FORBID_GET if round_ % 2 == 0 else PERMIT_GET
                    rules.write_text(text)
                    assert store.reload()
                    expected[store.engine.version] = "deny" if text == FORBID_GET else "allow"
                    rules.write_text("permit(principal, action, resource) when { resource.nope };\n")
                    assert not store.reload()  # refused: the set before it stays in force
                stop.set()
        calls = [record for record in gw.audit() if record.get("method") == "tools/call"]
        assert len(calls) >= 20
        assert {record["policy_version"] for record in calls} <= set(expected)
        assert len({record["policy_version"] for record in calls}) >= 2
        for record in calls:
            assert record["decision"] == expected[str(record["policy_version"])], record
        reloads = [record for record in gw.audit() if record.get("method") == "(policy reload)"]
        assert [record["reason"] for record in reloads].count("policy_reload_refused") == 10


async def test_two_gateways_share_rate_limits_in_redis_and_fail_closed_without_it(tmp_path: Path) -> None:
    with redis_server(tmp_path / "redis") as redis:
        # Per OAuth client: the two test gateways have issuers of their own (their ports differ), replicas
        # behind one public URL would share the per-user buckets the same way.
        policy = demo_policy(per_client="4/minute", redis_url=redis.url)
        upstream = {"command": CUSTOMERS, "scopes": SCOPES}
        async with (
            running_gateway(tmp_path / "a", {"customers": upstream}, policy=policy) as first,
            running_gateway(tmp_path / "b", {"customers": upstream}, policy=policy) as second,
        ):
            statuses = []
            for gw in (first, second, first, second, first):
                alice = token(gw, "alice", ["analyst"], ["customers.read"])
                statuses.append((await post(gw, alice, "get_customer", {"customer_id": "C001"})).status_code)
            assert statuses == [200, 200, 200, 200, 429]  # one bucket for the client, wherever it calls
            redis.stop()
            alice = token(second, "alice", ["analyst"], ["customers.read"])
            down = await post(second, alice, "get_customer", {"customer_id": "C001"})
            assert down.status_code == 503  # never unlimited because the shared store is gone
            assert last_call(second)["decision"] == "error"


async def test_machine_clients_get_only_the_scopes_the_policy_grants_them(tmp_path: Path) -> None:
    rules = tmp_path / "demo.cedar"
    rules.write_text(DEMO_POLICY.read_text())
    policy = {**demo_policy(), "files": [str(rules)], "watch": False}
    upstream = {"command": CUSTOMERS, "scopes": SCOPES}
    async with (
        running_gateway(tmp_path, {"customers": upstream}, policy=policy) as gw,
        httpx2.AsyncClient(verify=gw.client_ssl()) as http,
    ):
        registered = await http.post(
            f"{gw.base_url}/oauth/register",
            json={
                "client_name": "Nightly job",
                "token_endpoint_auth_method": "client_secret_post",
                "grant_types": ["client_credentials"],
                "redirect_uris": [],
            },
        )
        assert registered.status_code == 201, registered.text
        client = registered.json()
        form = {
            "grant_type": "client_credentials",
            "client_id": client["client_id"],
            "client_secret": client["client_secret"],
            "resource": gw.url("customers"),
            "scope": "customers.read",
        }
        refused = await http.post(f"{gw.base_url}/oauth/token", data=form)
        assert refused.status_code == 400
        assert refused.json()["error"] == "invalid_scope"  # the demo policy grants scopes to roles only
        # The operator permits this one client to read; the reload takes effect for the next grant.
        store = gw.gateway.policy
        assert store is not None
        with rules.open("a") as more:
            more.write(f'permit(principal == User::"{client["client_id"]}", action == Action::"grant_scope",')
            more.write(' resource == Scope::"customers.read");\n')
        assert store.reload()
        granted = await http.post(f"{gw.base_url}/oauth/token", data=form)
        assert granted.status_code == 200, granted.text
        assert granted.json()["scope"] == "customers.read"
