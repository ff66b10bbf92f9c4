"""``mcp-bastion demo``: the gateway on embedded defaults in front of the bundled 'customers' server.

HTTPS with a generated local CA, the built-in authorization server with two demo users (passwords generated
on first start and kept in the state directory, 0600), the demo server run as a supervised stdio child,
audit log in the state directory. Prints what a user needs to connect, then serves until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
from pathlib import Path

import orjson

from mcp_bastion.app import build_gateway
from mcp_bastion.cli.serve import listener_context, make_server, run
from mcp_bastion.identity.users import SQLUserDirectory
from mcp_bastion.privatefile import read_private, write_atomic
from mcp_bastion.settings import Settings, parse_settings
from mcp_bastion.storage.db import default_url, open_database
from mcp_bastion.web import mint_token

DEMO_USERS = {"alice": ("analyst",), "bob": ("admin",)}
"""The demo's people: an analyst (read-only tools) and an administrator (see demo/policies/demo.cedar)."""
USERS_FILE = "demo-users.json"
TOKEN_LIFETIME = 3600
DEMO_POLICY = Path(__file__).resolve().parent.parent / "demo" / "policies" / "demo.cedar"
"""The demo's Cedar policy (shipped in the package): analysts read, admins also write and delete."""
DEMO_ARGUMENTS = {"customer_id": "String", "region": "String"}
"""The demo tools' arguments the policy may read."""
SCOPES = {
    "customers.read": "Look up and search customer records",
    "customers.write": "Change customer email addresses",
    "customers.delete": "Delete customers",
}


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
                "customers": {
                    "command": [sys.executable, "-m", "mcp_bastion.demo.customers", "--stdio"],
                    "scopes": SCOPES,
                },
            },
            "policy": {"files": [str(DEMO_POLICY)], "arguments": DEMO_ARGUMENTS},
        },
        source="demo defaults",
    )


async def ensure_demo_users(settings: Settings) -> dict[str, str]:
    """Create the demo users on first start; returns username -> password (kept 0600 in the state dir)."""
    path = settings.server.state_dir / USERS_FILE
    known: dict[str, str] = {}
    if path.exists():
        known = orjson.loads(read_private(path, "demo users file", max_bytes=4096))
    async with open_database(default_url(settings)) as db:
        users = SQLUserDirectory(db)
        for name, roles in DEMO_USERS.items():
            if await users.find(name) is None:
                known[name] = secrets.token_urlsafe(12)
                await users.add(name, known[name], roles)
    write_atomic(path, orjson.dumps(known))
    return known


async def _demo_token(settings: Settings, url: str) -> str:
    """A token for alice as the login would give her one: her user id, name and roles."""
    async with open_database(default_url(settings)) as db:
        alice = await SQLUserDirectory(db).find("alice")
        assert alice is not None  # ensure_demo_users created her
        return await mint_token(
            db,
            settings,
            alice.id,
            url,
            scope=["customers.read"],
            lifetime=TOKEN_LIFETIME,
            client_id="demo",
            roles=alice.roles,
            username=alice.username,
        )


def run_demo(state_dir: Path, port: int) -> None:
    settings = demo_settings(state_dir, port)
    context, pki = listener_context(settings)
    passwords = asyncio.run(ensure_demo_users(settings))
    gateway = build_gateway(settings)
    assert pki is not None
    url = gateway.resources["customers"]
    token = asyncio.run(_demo_token(settings, url))
    print(_banner(url, pki.ca_cert, passwords, token, settings.server.state_dir / "audit.jsonl"), flush=True)
    server = make_server(gateway, context)
    with contextlib.suppress(KeyboardInterrupt):
        run(server)


def _banner(url: str, ca: Path, passwords: dict[str, str], token: str, audit: Path) -> str:
    people = "\n".join(
        f"                 {name:<6} password {passwords.get(name, '(set before; see mcp-bastion users passwd)')}"
        f"  ({', '.join(DEMO_USERS[name])})"
        for name in DEMO_USERS
    )
    return f"""
mcp-bastion demo is running.

  MCP endpoint   {url}
  trust this CA  {ca.resolve()}
  audit log      {audit.resolve()}
  log in as
{people}

Connect any MCP client that speaks OAuth (it discovers the login by itself): point it at the endpoint and
make it trust the CA (e.g. SSL_CERT_FILE / NODE_EXTRA_CA_CERTS={ca.resolve()}). Your browser opens the
gateway's login and consent pages.

For a quick look without a client, a short-lived token for alice (customers.read):
  export MCP_BASTION_TOKEN={token}
  curl --cacert {ca.resolve()} -H "Authorization: Bearer $MCP_BASTION_TOKEN" \\
       -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \\
       -H 'MCP-Protocol-Version: 2026-07-28' -H 'Mcp-Method: tools/list' \\
       -d '{{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{{"_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{{}}}}}}}}' \\
       {url}

Ctrl-C stops it.
"""
