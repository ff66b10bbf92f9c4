"""End to end: the gateway reaches an HTTPS upstream with a pinned CA bundle and, when the upstream asks
for one, its own client certificate (mTLS to the upstream)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

from tests.e2e.gateway import running_gateway
from tests.e2e.test_refusals import MODERN_HEADERS, call, reason
from tests.helpers.procs import serve_module

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


def write(tmp_path: Path, name: str, blob: trustme.Blob) -> str:
    path = tmp_path / name
    blob.write_to_path(str(path))
    return str(path)


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, str]:
    upstream_ca = trustme.CA()
    server = upstream_ca.issue_cert("127.0.0.1", "localhost")
    gateway_client = upstream_ca.issue_cert("mcp-bastion-gateway")
    files = {
        "ca": write(tmp_path, "upstream-ca.pem", upstream_ca.cert_pem),
        "cert": write(tmp_path, "upstream.pem", server.cert_chain_pems[0]),
        "key": write(tmp_path, "upstream.key", server.private_key_pem),
        "client_cert": write(tmp_path, "gw-client.pem", gateway_client.cert_chain_pems[0]),
        "client_key": write(tmp_path, "gw-client.key", gateway_client.private_key_pem),
        "other_ca": write(tmp_path, "other-ca.pem", trustme.CA().cert_pem),
    }
    return files


async def test_pinned_ca_and_client_certificate(tmp_path: Path, pki: dict[str, str]) -> None:
    args = ["--http", "--port", "0", "--tls-cert", pki["cert"], "--tls-key", pki["key"], "--tls-client-ca", pki["ca"]]
    async with serve_module("mcp_bastion.demo.customers", *args) as url:
        assert url.startswith("https://")
        upstreams = {
            "pinned": {
                "url": url,
                "ca_bundle": pki["ca"],
                "client_cert": pki["client_cert"],
                "client_key": pki["client_key"],
            },
            "no_client_cert": {"url": url, "ca_bundle": pki["ca"]},
            "wrong_ca": {
                "url": url,
                "ca_bundle": pki["other_ca"],
                "client_cert": pki["client_cert"],
                "client_key": pki["client_key"],
            },
        }
        async with running_gateway(tmp_path, upstreams) as gw:
            answers = {}
            for name in upstreams:
                async with gw.http(gw.token(server=name)) as http:
                    answers[name] = await http.post(gw.url(name), json=call(), headers=MODERN_HEADERS)
            records = {r["server"]: r for r in gw.audit()}
    assert answers["pinned"].status_code == 200, answers["pinned"].text
    assert answers["pinned"].json()["result"]["isError"] is False
    # The upstream refuses a gateway without a client certificate; the gateway refuses an upstream whose
    # certificate does not chain to the pinned CA. Both are upstream errors to the client, nothing more.
    for name in ("no_client_cert", "wrong_ca"):
        assert answers[name].status_code == 502, answers[name].text
        assert reason(answers[name]) == "upstream_unreachable"
        assert "certificate" not in answers[name].text.lower()  # the operator's detail stays in the audit log
    assert "CERTIFICATE_VERIFY_FAILED" in str(records["wrong_ca"]["detail"])
