"""Composition of the gateway's web side: the built-in authorization server, its storage, the local users,
and the login and consent pages, served beside the MCP endpoints by one Starlette router.

``app.build_gateway`` calls ``build_authorization`` when ``oauth.enabled``; the router is handed to
``BastionApp`` for every path that is not an MCP endpoint.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from starlette.applications import Starlette

from mcp_bastion import netguard
from mcp_bastion.asgi.oauth import oauth_routes
from mcp_bastion.asgi.pages import page_routes
from mcp_bastion.errors import ConfigError
from mcp_bastion.identity.ratelimit import LoginRateLimiter
from mcp_bastion.identity.users import SQLUserDirectory
from mcp_bastion.oauth.cimd import ClientMetadataResolver
from mcp_bastion.oauth.grants import Lifetimes
from mcp_bastion.oauth.localissuer import LocalIssuer
from mcp_bastion.oauth.sealing import MemorySealer
from mcp_bastion.oauth.server import AuthorizationServer
from mcp_bastion.privatefile import read_private, write_atomic
from mcp_bastion.secrets import resolve_reference
from mcp_bastion.settings import Settings
from mcp_bastion.storage.db import Database, default_url
from mcp_bastion.storage.oauthstore import SQLOAuthStore

PAGE_KEY_FILE = "pages-session.key"
PAGE_KEY_BYTES = 32


@dataclass
class Authorization:
    """The authorization server and what it owns; started and stopped with the gateway."""

    db: Database
    server: AuthorizationServer
    users: SQLUserDirectory
    app: Starlette
    documents: ClientMetadataResolver | None = None

    async def startup(self) -> None:
        await self.db.upgrade()

    async def shutdown(self) -> None:
        await self.server.aclose()
        if self.documents is not None:
            await self.documents.aclose()
        await self.db.aclose()


class _Limiter:
    """The pages' async ``LoginLimiter`` over the in-process token buckets."""

    def __init__(self, limiter: LoginRateLimiter) -> None:
        self._limiter = limiter

    async def check(self, username: str, address: str) -> float:
        return self._limiter.check(username, address)

    async def failed(self, username: str, address: str) -> None:
        self._limiter.failure(username, address)

    async def succeeded(self, username: str, address: str) -> None:
        self._limiter.success(username, address)


def build_authorization(
    settings: Settings, resources: Mapping[str, str], signer: LocalIssuer, *, secure: bool
) -> Authorization:
    """``resources`` maps each endpoint name to its resource URL; the scopes come from the upstream settings."""
    oauth = settings.oauth
    db = Database(default_url(settings))
    offered = {resources[name]: dict(upstream.scopes) for name, upstream in settings.upstreams.items()}
    documents = None
    if oauth.client_id_metadata_documents:
        private = oauth.allow_private_metadata_hosts
        documents = ClientMetadataResolver(
            netguard.Policy(allow_loopback=private, allow_private=private),
            known_scopes=frozenset(scope for scopes in offered.values() for scope in scopes),
        )
    tokens = (
        (resolve_reference(oauth.registration_token, "oauth.registration_token"),) if oauth.registration_token else ()
    )
    server = AuthorizationServer(
        issuer=signer.issuer,
        signer=signer,
        store=SQLOAuthStore(db),
        # Sealed refresh pairs live only for the grace window; an in-memory key is enough until the vault.
        sealer=MemorySealer(),
        resources=offered,
        registration_policy=oauth.registration,
        initial_access_tokens=tokens,
        lifetimes=Lifetimes(
            access_token=oauth.access_token_lifetime,
            refresh_grace=oauth.refresh_grace_seconds,
            family=oauth.refresh_family_lifetime,
        ),
        metadata_documents=documents,
    )
    users = SQLUserDirectory(db)
    routes = [
        *oauth_routes(server),
        *page_routes(
            server,
            users,
            issuer=signer.issuer,
            secure_cookies=secure,
            login_limiter=_Limiter(LoginRateLimiter()),
            session_key=_page_key(settings.server.state_dir),
        ),
    ]
    return Authorization(db, server, users, Starlette(routes=routes), documents)


def _page_key(state_dir: Path) -> bytes:
    """The key signing the pages' cookies and forms: kept in the state directory so a restart (or another
    replica sharing it) keeps logins in progress valid."""
    path = state_dir / PAGE_KEY_FILE
    if not path.exists():
        write_atomic(path, secrets.token_bytes(PAGE_KEY_BYTES), keep_existing=True)
    key = read_private(path, "page session key", max_bytes=PAGE_KEY_BYTES)
    if len(key) != PAGE_KEY_BYTES:
        raise ConfigError(f"page session key {path} must hold {PAGE_KEY_BYTES} bytes")
    return key
