"""``mcp-bastion demo``: the gateway on embedded defaults in front of the bundled 'customers' server.

HTTPS with a generated local CA, the built-in token issuer, the demo server run as a supervised stdio
child, audit log in the state directory. Prints what a user needs to connect, then serves until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from mcp_bastion.app import build_gateway
from mcp_bastion.cli.serve import listener_context, make_server, run
from mcp_bastion.settings import Settings, parse_settings

DEMO_USER = "alice"
TOKEN_LIFETIME = 3600


def demo_settings(state_dir: Path, port: int) -> Settings:
    return parse_settings(
        {
            "server": {
                "host": "127.0.0.1",
                "port": port,
                "state_dir": str(state_dir),
                "public_url": f"https://localhost:{port}",
            },
            "upstreams": {
                "customers": {"command": [sys.executable, "-m", "mcp_bastion.demo.customers", "--stdio"]},
            },
        },
        source="demo defaults",
    )


def run_demo(state_dir: Path, port: int) -> None:
    settings = demo_settings(state_dir, port)
    context, pki = listener_context(settings)
    gateway = build_gateway(settings)
    assert gateway.local_issuer is not None
    assert pki is not None
    url = gateway.resources["customers"]
    token = gateway.local_issuer.mint(DEMO_USER, url, lifetime=TOKEN_LIFETIME, client_id="demo")
    print(_banner(url, pki.ca_cert, token, gateway.settings.server.state_dir / "audit.jsonl"), flush=True)
    server = make_server(gateway, context)
    with contextlib.suppress(KeyboardInterrupt):
        run(server)


def _banner(url: str, ca: Path, token: str, audit: Path) -> str:
    return f"""
mcp-bastion demo is running.

  MCP endpoint   {url}
  trust this CA  {ca.resolve()}
  audit log      {audit.resolve()}
  demo user      {DEMO_USER} (token valid {TOKEN_LIFETIME // 60} minutes)

  export MCP_BASTION_TOKEN={token}

Try it (the gateway refuses anything without the token):
  curl --cacert {ca.resolve()} -H "Authorization: Bearer $MCP_BASTION_TOKEN" \\
       -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \\
       -H 'MCP-Protocol-Version: 2026-07-28' -H 'Mcp-Method: tools/list' \\
       -d '{{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{{"_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{{}}}}}}}}' \\
       {url}

Or from Python with the mcp SDK (SSL_CERT_FILE={ca.resolve()}):
  httpx2.AsyncClient(headers={{"Authorization": f"Bearer {{token}}"}}) + mcp.client.streamable_http.streamable_http_client

Ctrl-C stops it.
"""
