"""End to end, negative space: every refusal over real HTTPS, with the right status, reason and audit record."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx2
import orjson
import pytest

from mcp_bastion.exchange import Principal
from mcp_bastion.oauth.localissuer import LocalIssuer
from tests.e2e.gateway import RunningGateway, running_gateway
from tests.helpers.procs import serve_module

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

MODERN = "2026-07-28"
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}


def call(name: str = "get_customer", args: dict[str, object] | None = None, msg_id: int = 7) -> dict[str, object]:
    return {
        "jsonrpc": "2.0",
        "id": msg_id,
        "method": "tools/call",
        "params": {
            "name": name,
            "arguments": args if args is not None else {"customer_id": "C001"},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": MODERN,
                "io.modelcontextprotocol/clientCapabilities": {},
            },
        },
    }


MODERN_HEADERS = {
    "content-type": "application/json",
    "accept": "application/json, text/event-stream",
    "mcp-protocol-version": MODERN,
    "mcp-method": "tools/call",
    "mcp-name": "get_customer",
}
LEGACY_HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    async with serve_module("mcp_bastion.demo.customers", "--http", "--port", "0") as upstream_url:
        upstreams = {
            "up": {"url": upstream_url, "allow_insecure_http": True},
            "other": {"url": upstream_url, "allow_insecure_http": True, "deny_methods": ["tools/call"]},
        }
        async with running_gateway(tmp_path, upstreams, limits={"max_body_bytes": 4096, "max_json_depth": 16}) as g:
            yield g


def reason(response: httpx2.Response) -> str:
    body = response.json()
    return str(body["error"]["data"]["reason"])


def last_audit(gw: RunningGateway) -> dict[str, object]:
    return gw.audit()[-1]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, object], claims: dict[str, object], key: bytes = b"") -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest() if key else b""
    return f"{signing_input}.{_b64(signature)}"


async def test_valid_token_is_served(gw: RunningGateway) -> None:
    async with gw.http(gw.token()) as http:
        response = await http.post(gw.url("up"), json=call(), headers=MODERN_HEADERS)
    assert response.status_code == 200, response.text
    assert response.json()["result"]["isError"] is False
    assert last_audit(gw)["decision"] == "allow"


async def test_missing_token_gets_401_with_resource_metadata(gw: RunningGateway) -> None:
    async with gw.http() as http:
        response = await http.post(gw.url("up"), json=call(), headers=MODERN_HEADERS)
        assert response.status_code == 401
        challenge = response.headers["www-authenticate"]
        assert challenge.startswith("Bearer ")
        metadata_url = challenge.split('resource_metadata="', 1)[1].split('"', 1)[0]
        assert metadata_url == f"{gw.base_url}/.well-known/oauth-protected-resource/mcp/up"
        document = (await http.get(metadata_url)).json()
    assert document["resource"] == gw.url("up")
    assert document["authorization_servers"] == [gw.base_url]
    assert reason(response) == "token_missing"
    record = last_audit(gw)
    assert (record["decision"], record["reason"], record["status"]) == ("deny", "token_missing", 401)


def _claims(gw: RunningGateway, **override: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": gw.base_url,
        "sub": "mallory",
        "aud": gw.url("up"),
        "exp": now + 300,
        "iat": now,
        "jti": "x",
        "client_id": "c",
    }
    claims.update(override)
    return claims


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        pytest.param("expired", "token_expired", id="expired"),
        pytest.param("wrong_audience", "token_audience_mismatch", id="wrong-audience"),
        pytest.param("other_issuer_key", "token_key_unknown", id="same-iss-foreign-key"),
        pytest.param("unknown_issuer", "token_issuer_unknown", id="unknown-issuer"),
        pytest.param("alg_none", "token_alg_forbidden", id="alg-none"),
        pytest.param("hs256_public_key", "token_alg_forbidden", id="hs256-with-public-key"),
        pytest.param("garbage", "token_malformed", id="garbage"),
    ],
)
async def test_bad_tokens_are_refused(gw: RunningGateway, tmp_path: Path, case: str, expected: str) -> None:
    issuer = gw.gateway.local_issuer
    assert issuer is not None
    if case == "expired":
        token = issuer.mint("alice", gw.url("up"), lifetime=60, now=time.time() - 3600)
    elif case == "wrong_audience":
        token = issuer.mint("alice", gw.url("other"))
    elif case == "other_issuer_key":
        token = LocalIssuer.load_or_create(tmp_path / "k.jwk", gw.base_url).mint("alice", gw.url("up"))
    elif case == "unknown_issuer":
        token = LocalIssuer.load_or_create(tmp_path / "k.jwk", "https://evil.example").mint("alice", gw.url("up"))
    elif case == "alg_none":
        token = forged({"alg": "none", "typ": "at+jwt"}, _claims(gw))
    elif case == "hs256_public_key":
        public_jwk = json.dumps(issuer.public_keys().as_jwks()["keys"][0]).encode()
        token = forged({"alg": "HS256", "typ": "at+jwt", "kid": issuer.kid}, _claims(gw), key=public_jwk)
    else:
        token = "not.a.jwt"
    async with gw.http(token) as http:
        response = await http.post(gw.url("up"), json=call(), headers=MODERN_HEADERS)
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert reason(response) == expected
    assert last_audit(gw)["reason"] == expected


async def test_plain_http_is_refused(gw: RunningGateway) -> None:
    async with httpx2.AsyncClient(timeout=5) as http:
        with pytest.raises(httpx2.HTTPError):
            await http.post(gw.url("up").replace("https://", "http://"), json=call(), headers=MODERN_HEADERS)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
async def test_tls_1_1_is_refused(gw: RunningGateway) -> None:
    context = gw.client_ssl()
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    port = int(gw.base_url.rsplit(":", 1)[1])

    def handshake() -> None:  # blocking: run it off the event loop that serves the gateway
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            context.wrap_socket(raw, server_hostname="127.0.0.1")

    with pytest.raises(ssl.SSLError):
        await anyio.to_thread.run_sync(handshake)


@pytest.mark.parametrize(
    ("headers", "status", "expected"),
    [
        pytest.param({"host": "evil.example"}, 403, "host_not_allowed", id="dns-rebinding-host"),
        pytest.param({"origin": "https://evil.example"}, 403, "origin_not_allowed", id="foreign-origin"),
        pytest.param({"content-type": "text/plain"}, 415, "unsupported_media_type", id="content-type"),
        pytest.param({"accept": "text/html"}, 406, "not_acceptable", id="accept"),
    ],
)
async def test_transport_refusals(gw: RunningGateway, headers: dict[str, str], status: int, expected: str) -> None:
    async with gw.http(gw.token()) as http:
        response = await http.post(gw.url("up"), content=orjson.dumps(call()), headers={**MODERN_HEADERS, **headers})
    assert response.status_code == status
    assert reason(response) == expected
    assert last_audit(gw)["reason"] == expected


@pytest.mark.parametrize(
    ("body", "status", "code", "expected"),
    [
        pytest.param(b"{not json", 400, -32700, "parse_error", id="invalid-json"),
        pytest.param(b'{"jsonrpc":"1.0","id":1,"method":"x"}', 400, -32600, "bad_jsonrpc_version", id="bad-version"),
        pytest.param(b'{"jsonrpc":"2.0","id":null,"method":"tools/list"}', 400, -32600, "bad_id", id="null-id"),
        pytest.param(b"[]", 400, -32600, "empty_batch", id="empty-batch"),
        pytest.param(b"[" * 40 + b"]" * 40, 400, -32600, "json_too_deep", id="too-deep"),
        pytest.param(b'{"pad":"' + b"x" * 5000 + b'"}', 413, -32001, "body_too_large", id="too-large"),
    ],
)
async def test_bad_bodies(gw: RunningGateway, body: bytes, status: int, code: int, expected: str) -> None:
    async with gw.http(gw.token()) as http:
        response = await http.post(gw.url("up"), content=body, headers=MODERN_HEADERS)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert reason(response) == expected
    assert "Traceback" not in response.text
    assert last_audit(gw)["reason"] == expected


async def test_unknown_method_is_denied(gw: RunningGateway) -> None:
    message = {**call(), "method": "admin/shutdown"}
    async with gw.http(gw.token()) as http:
        response = await http.post(
            gw.url("up"), json=message, headers={**MODERN_HEADERS, "mcp-method": "admin/shutdown"}
        )
    assert response.status_code == 200
    assert response.json()["error"]["code"] == -32601
    assert response.json()["id"] == 7
    assert last_audit(gw)["reason"] == "method_not_allowed"


async def test_denied_method_per_upstream(gw: RunningGateway) -> None:
    async with gw.http(gw.token(server="other")) as http:
        response = await http.post(gw.url("other"), json=call(), headers=MODERN_HEADERS)
    assert response.json()["error"]["code"] == -32601


async def test_oversized_headers_are_refused(gw: RunningGateway) -> None:
    async with gw.http(gw.token()) as http:
        response = await http.post(gw.url("up"), json=call(), headers={**MODERN_HEADERS, "x-pad": "a" * 40_000})
    assert response.status_code in (400, 431)
    record = last_audit(gw)
    assert (record["method"], record["decision"], record["reason"]) == ("(connection)", "deny", "headers_too_large")


async def test_session_of_another_identity_is_refused(gw: RunningGateway) -> None:
    async with gw.http(gw.token("alice")) as alice:
        opened = await alice.post(gw.url("up"), json=INIT, headers=LEGACY_HEADERS)
        assert opened.status_code == 200, opened.text
        session_id = opened.headers["mcp-session-id"]
        listed = await alice.post(
            gw.url("up"),
            json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
            headers={**LEGACY_HEADERS, "mcp-session-id": session_id, "mcp-protocol-version": "2025-11-25"},
        )
        assert listed.status_code == 200, listed.text
    async with gw.http(gw.token("mallory")) as mallory:
        stolen = await mallory.post(
            gw.url("up"),
            json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
            headers={**LEGACY_HEADERS, "mcp-session-id": session_id, "mcp-protocol-version": "2025-11-25"},
        )
        unknown = await mallory.post(
            gw.url("up"),
            json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
            headers={**LEGACY_HEADERS, "mcp-session-id": "no-such-session"},
        )
    # A stolen id looks exactly like an unknown one to the thief; the audit log tells them apart.
    assert stolen.status_code == unknown.status_code == 404
    assert reason(stolen) == reason(unknown)
    reasons = [r["reason"] for r in gw.audit()[-2:]]
    assert reasons == ["session_foreign", "session_unknown"], gw.audit()[-3:]


async def test_upstream_session_id_never_reaches_the_client(gw: RunningGateway) -> None:
    async with gw.http(gw.token()) as http:
        opened = await http.post(gw.url("up"), json=INIT, headers=LEGACY_HEADERS)
    session = gw.gateway.sessions.get(opened.headers["mcp-session-id"], _alice(gw), "up")
    upstream_id = getattr(session.channel, "session_id", None)
    assert upstream_id
    assert upstream_id != session.id


def _alice(gw: RunningGateway) -> Principal:
    return Principal(subject="alice", issuer=gw.base_url, method="bearer")


async def test_slow_headers_are_cut_off(tmp_path: Path) -> None:
    async with serve_module("mcp_bastion.demo.customers", "--http", "--port", "0") as upstream_url:
        upstreams = {"up": {"url": upstream_url, "allow_insecure_http": True}}
        async with running_gateway(tmp_path, upstreams, limits={"header_timeout": 0.5}) as gw:
            port = int(gw.base_url.rsplit(":", 1)[1])
            stream = await anyio.connect_tcp(
                "127.0.0.1", port, ssl_context=gw.client_ssl(), tls_standard_compatible=False
            )
            async with stream:
                await stream.send(b"POST /mcp/up HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                with anyio.fail_after(10):  # the gateway must close long before this
                    data = b""
                    try:
                        while chunk := await stream.receive():
                            data += chunk
                    except (anyio.EndOfStream, anyio.BrokenResourceError, ssl.SSLError):
                        pass
    assert b"200 OK" not in data
    record = gw.audit()[-1]
    assert (record["method"], record["decision"], record["reason"]) == ("(connection)", "deny", "header_timeout")


async def test_dead_upstream_gives_clear_error_and_gateway_stays_up(tmp_path: Path) -> None:
    async with serve_module("mcp_bastion.demo.customers", "--http", "--port", "0") as upstream_url:
        pass  # the upstream is gone now
    upstreams = {"up": {"url": upstream_url, "allow_insecure_http": True}}
    async with running_gateway(tmp_path, upstreams) as gw, gw.http(gw.token()) as http:
        response = await http.post(gw.url("up"), json=call(), headers=MODERN_HEADERS)
        assert response.status_code == 502
        assert reason(response) == "upstream_unreachable"
        assert gw.audit()[-1]["decision"] == "error"
        assert (await http.get(f"{gw.base_url}/healthz")).status_code == 200


async def test_batch_is_answered_per_message(gw: RunningGateway) -> None:
    """A JSON-RPC batch (MCP 2025-03-26): each message decided and audited on its own, answers in one array."""
    async with gw.http(gw.token()) as http:
        opened = await http.post(gw.url("up"), json=INIT, headers=LEGACY_HEADERS)
        session = {**LEGACY_HEADERS, "mcp-session-id": opened.headers["mcp-session-id"]}
        await http.post(gw.url("up"), json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session)
        batch = [
            {"jsonrpc": "2.0", "id": 10, "method": "tools/list"},
            {"jsonrpc": "2.0", "id": 11, "method": "admin/shutdown"},
            {
                "jsonrpc": "2.0",
                "id": 12,
                "method": "tools/call",
                "params": {"name": "get_customer", "arguments": {"customer_id": "C001"}},
            },
            {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 99}},
        ]
        response = await http.post(gw.url("up"), json=batch, headers=session)
    assert response.status_code == 200, response.text
    answers = {answer["id"]: answer for answer in response.json()}
    assert set(answers) == {10, 11, 12}
    assert "tools" in answers[10]["result"]
    assert answers[11]["error"]["code"] == -32601
    assert answers[12]["result"]["isError"] is False
    batch_records = gw.audit()[-4:]
    assert [(r["jsonrpc_id"], r["decision"]) for r in batch_records] == [
        (10, "allow"),
        (11, "deny"),
        (12, "allow"),
        (None, "allow"),
    ]


async def test_initialize_in_a_batch_is_refused(gw: RunningGateway) -> None:
    async with gw.http(gw.token()) as http:
        response = await http.post(gw.url("up"), json=[INIT], headers=LEGACY_HEADERS)
    assert response.json()[0]["error"]["data"]["reason"] == "initialize_in_batch"
    assert len(gw.gateway.sessions) == 0


async def test_plain_http_only_when_allowed_on_loopback(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with serve_module("mcp_bastion.demo.customers", "--http", "--port", "0") as upstream_url:
        upstreams = {"up": {"url": upstream_url, "allow_insecure_http": True}}
        async with running_gateway(tmp_path, upstreams, server={"allow_insecure_http": True}) as gw:
            assert gw.base_url.startswith("http://")
            async with gw.http(gw.token()) as http:
                response = await http.post(gw.url("up"), json=call(), headers=MODERN_HEADERS)
            assert response.status_code == 200
    assert any("INSECURE: server.allow_insecure_http" in r.getMessage() for r in caplog.records)
