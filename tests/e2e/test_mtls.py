"""End to end: mutual TLS, where the client certificate is the caller's identity."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx2
import pytest

from tests.e2e.gateway import RunningGateway, running_gateway
from tests.e2e.test_refusals import MODERN_HEADERS, call, reason
from tests.helpers.procs import serve_module
from tests.tls.support import ClientCA

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


@pytest.fixture
async def upstream_url() -> AsyncIterator[str]:
    async with serve_module("mcp_bastion.demo.customers", "--http", "--port", "0") as url:
        yield url


def client(gw: RunningGateway, cert: Path | None = None, key: Path | None = None) -> httpx2.AsyncClient:
    context = gw.client_ssl()
    if cert is not None:
        context.load_cert_chain(cert, key)
    return httpx2.AsyncClient(verify=context, timeout=10)


async def test_certificate_identity_is_the_principal(tmp_path: Path, upstream_url: str) -> None:
    ca = ClientCA(tmp_path / "pki", "Example clients CA")
    agent = ca.issue("agent", uri="spiffe://example.org/agent/billing")
    upstreams = {"up": {"url": upstream_url, "allow_insecure_http": True}}
    tls = {"client_auth": {"ca": str(ca.cert_path), "required": False}}
    async with running_gateway(tmp_path, upstreams, tls=tls) as gw:
        async with client(gw, agent.cert, agent.key) as http:
            response = await http.post(gw.url("up"), json=call(), headers=MODERN_HEADERS)
        assert response.status_code == 200, response.text
        record = gw.audit()[-1]
        assert (record["principal"], record["auth"], record["decision"]) == (
            "spiffe://example.org/agent/billing",
            "mtls",
            "allow",
        )
        # Optional mTLS: without a certificate, a bearer token still works; without either, 401.
        async with client(gw) as http:
            anonymous = await http.post(gw.url("up"), json=call(), headers=MODERN_HEADERS)
            with_token = await http.post(
                gw.url("up"), json=call(), headers={**MODERN_HEADERS, "authorization": f"Bearer {gw.token()}"}
            )
        assert anonymous.status_code == 401
        assert with_token.status_code == 200


async def test_certificate_from_another_ca_is_refused(tmp_path: Path, upstream_url: str) -> None:
    trusted = ClientCA(tmp_path / "trusted", "Trusted CA")
    rogue = ClientCA(tmp_path / "rogue", "Rogue CA").issue("rogue", common_name="admin")
    upstreams = {"up": {"url": upstream_url, "allow_insecure_http": True}}
    tls = {"client_auth": {"ca": str(trusted.cert_path), "required": False}}
    async with running_gateway(tmp_path, upstreams, tls=tls) as gw:
        async with client(gw, rogue.cert, rogue.key) as http:
            with pytest.raises((httpx2.HTTPError, ssl.SSLError)):
                await http.post(gw.url("up"), json=call(), headers=MODERN_HEADERS)
        assert not any(r["principal"] == "admin" for r in gw.audit())


async def test_required_client_certificate(tmp_path: Path, upstream_url: str) -> None:
    ca = ClientCA(tmp_path / "pki", "Clients CA")
    upstreams = {"up": {"url": upstream_url, "allow_insecure_http": True}}
    tls = {"client_auth": {"ca": str(ca.cert_path), "required": True}}
    async with running_gateway(tmp_path, upstreams, tls=tls) as gw:
        async with client(gw) as http:
            with pytest.raises((httpx2.HTTPError, ssl.SSLError)):
                await http.post(
                    gw.url("up"), json=call(), headers={**MODERN_HEADERS, "authorization": f"Bearer {gw.token()}"}
                )
        named = ca.issue("svc", common_name="svc-reporting")
        async with client(gw, named.cert, named.key) as http:
            response = await http.post(gw.url("up"), json=call(), headers=MODERN_HEADERS)
        assert response.status_code == 200, response.text
        assert gw.audit()[-1]["principal"] == "svc-reporting"


async def test_slow_body_is_cut_off(tmp_path: Path, upstream_url: str) -> None:
    upstreams = {"up": {"url": upstream_url, "allow_insecure_http": True}}
    async with running_gateway(tmp_path, upstreams, limits={"body_timeout": 0.3}) as gw:

        async def trickle() -> AsyncIterator[bytes]:
            yield b'{"jsonrpc":'
            await anyio.sleep(2)
            yield b'"2.0"}'

        async with gw.http(gw.token()) as http:
            response = await http.post(
                gw.url("up"), content=trickle(), headers={**MODERN_HEADERS, "content-length": "17"}
            )
        assert response.status_code == 400
        assert reason(response) == "body_timeout"


async def test_certificate_identities_get_their_configured_roles_in_policies(tmp_path: Path, upstream_url: str) -> None:
    ca = ClientCA(tmp_path / "pki", "Clients CA")
    billing = ca.issue("billing", uri="spiffe://example.org/agent/billing")
    other = ca.issue("other", uri="spiffe://example.org/agent/other")
    rules = tmp_path / "agents.cedar"
    rules.write_text(
        '@id("agents-read") permit(principal in Role::"agent", action == Action::"tools/call", resource)\n'
        "  when { resource.read_only && context.network.mtls };\n"
    )
    upstreams = {"up": {"url": upstream_url, "allow_insecure_http": True}}
    roles = {"spiffe://example.org/agent/billing": ["agent"]}
    tls = {"client_auth": {"ca": str(ca.cert_path), "required": False, "roles": roles}}
    policy = {"files": [str(rules)], "rate_limits": {"per_user": None, "per_tool": None}}
    async with running_gateway(tmp_path, upstreams, tls=tls, policy=policy) as gw:
        answers = {}
        for name, identity in (("billing", billing), ("other", other)):
            async with client(gw, identity.cert, identity.key) as http:
                answers[name] = (await http.post(gw.url("up"), json=call(), headers=MODERN_HEADERS)).json()
        assert answers["billing"]["result"]["isError"] is False
        assert answers["other"]["error"]["data"]["reason"] == "policy_denied"
        assert gw.audit()[-2]["policies"] == ["agents-read"]
