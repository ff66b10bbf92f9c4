"""Composition of the gateway's web side: the built-in authorization server, its storage, the local users,
the external OpenID Providers users may log in with (``oauth.federation``), and the login and consent
pages, served beside the MCP endpoints by one Starlette router.

``app.build_gateway`` calls ``build_authorization`` when ``oauth.enabled``; the router is handed to
``BastionApp`` for every path that is not an MCP endpoint.

Secrets at rest go through one ``vault.Vault`` (a KEK file in the state directory for now): the private
halves of the token-signing keys (``oauth.signingkeys``), the refresh pairs kept for the grace window and
the login pages' signing key (``storage.pagekeys``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, cast

from starlette.applications import Starlette
from starlette.routing import Route

from mcp_bastion import netguard
from mcp_bastion.asgi.oauth import oauth_routes
from mcp_bastion.asgi.pages import page_routes
from mcp_bastion.asgi.pages.federated import callback_path
from mcp_bastion.errors import ConfigError
from mcp_bastion.identity.ratelimit import LoginRateLimiter
from mcp_bastion.identity.users import SQLUserDirectory
from mcp_bastion.oauth.cimd import ClientMetadataResolver
from mcp_bastion.oauth.federation import FederatedLogin, OIDCProvider
from mcp_bastion.oauth.grants import Lifetimes
from mcp_bastion.oauth.localissuer import KEY_FILENAME, LocalIssuer
from mcp_bastion.oauth.refusal import Refusal
from mcp_bastion.oauth.revocationcache import RevocationCache, RevokingStore
from mcp_bastion.oauth.server import AuthorizationServer
from mcp_bastion.oauth.service import OAuthError, ScopePolicy, allow_all
from mcp_bastion.oauth.signer import TokenSigner
from mcp_bastion.oauth.signingkeys import SigningKeyRing
from mcp_bastion.oauth.store import OAuthStore
from mcp_bastion.secrets import KVReader, kv_reader, resolve_reference
from mcp_bastion.settings import OIDCProviderSettings, Settings
from mcp_bastion.storage.db import Database, default_url
from mcp_bastion.storage.oauthstore import SQLOAuthStore
from mcp_bastion.storage.pagekeys import load_page_key
from mcp_bastion.vault.envelope import Vault
from mcp_bastion.vault.keyfile import DEFAULT_FILENAME, LocalKeyFile
from mcp_bastion.vault.remote import FILENAME as REMOTE_KEYS_FILENAME
from mcp_bastion.vault.remote import WrappedKeyRing
from mcp_bastion.vault.sealer import VaultSealer
from mcp_bastion.vault.wrapper import KeyWrapper

log = logging.getLogger("mcp_bastion.web")

PAGE_KEY_FILE = "pages-session.key"
"""Where the pages' signing key was kept before it moved to the database; imported on the first start."""
DISCOVERY_RETRY_SECONDS: Final = 30.0
"""First wait before discovering an IdP again after it failed at startup; doubled after each failure..."""
DISCOVERY_RETRY_MAX_SECONDS: Final = 600.0
"""... up to this."""


@dataclass
class Authorization:
    """The authorization server and what it owns; started and stopped with the gateway."""

    db: Database
    kek: LocalKeyFile | WrappedKeyRing
    """The vault's KEKs (a remote ring is unwrapped at startup and refreshed in the background)."""
    vault: Vault
    keys: SigningKeyRing
    """Signs our access tokens; the gateway's own issuer trusts its ``key_source``."""
    server: AuthorizationServer
    users: SQLUserDirectory
    app: Starlette
    documents: ClientMetadataResolver | None = None
    revocation: RevocationCache = field(default_factory=RevocationCache)
    """What the resource side asks on every call (cached; see ``oauth.revocationcache``)."""
    federation: dict[str, FederatedLogin] = field(default_factory=dict)
    """External IdPs by name (``oauth.federation``), shared with the pages."""
    pages: Callable[[bytes], list[Route]] | None = None
    """The login and consent pages given their signing key, mounted by ``startup`` once the key is read."""
    page_key_file: Path | None = None
    """The legacy key file in the state directory (``PAGE_KEY_FILE``), imported if the database has no key."""
    _retries: list[asyncio.Task[None]] = field(default_factory=list)
    _maintain: asyncio.Task[None] | None = None
    _kek_refresh: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        await self.db.upgrade()
        if isinstance(self.kek, WrappedKeyRing):
            # The remote root key must answer before anything is opened: a gateway that cannot reach it
            # does not start (the signing keys could not be opened), rather than run without its secrets.
            await self.kek.load()
            self._kek_refresh = asyncio.create_task(self.kek.maintain())
        # Before any request: creates the first key on a new database, and refuses to start (ConfigError)
        # when no stored key can be opened with this vault, rather than minting with a key nobody trusts.
        await self.keys.load()
        self._maintain = asyncio.create_task(self.keys.maintain())
        if self.pages is not None:
            # From the database, not the state directory: replicas share the one but not always the other,
            # and a login started on one replica may be posted to another.
            key = await load_page_key(self.db, self.vault, legacy=self.page_key_file)
            self.app.router.routes.extend(self.pages(key))
            self.pages = None  # mounted once, even if startup runs again
        # An IdP that cannot be discovered does not stop the gateway: it logs an error and its button shows
        # "temporarily unavailable" until a retry succeeds. Refusing to start would turn an outage of the
        # company IdP into an outage of every MCP server behind the gateway, for local users, machine
        # clients and tokens already issued alike, and into a restart loop; a typo in the settings, which
        # a restart would not fix, is still refused when the settings are read.
        names = list(self.federation)
        found = await asyncio.gather(*(_discover(name, self.federation[name]) for name in names))
        for name, ok in zip(names, found, strict=True):
            if not ok:
                self._retries.append(asyncio.create_task(_keep_discovering(name, self.federation[name])))

    async def shutdown(self) -> None:
        background = [task for task in (self._maintain, self._kek_refresh) if task is not None]
        for task in [*self._retries, *background]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for login in self.federation.values():
            await login.aclose()
        await self.keys.aclose()
        if isinstance(self.kek, WrappedKeyRing):
            await self.kek.aclose()
        await self.server.aclose()
        if self.documents is not None:
            await self.documents.aclose()
        await self.db.aclose()


async def _discover(name: str, login: FederatedLogin) -> bool:
    try:
        await login.discover()
    except OAuthError as exc:  # Refusal: unreachable, or an unusable configuration document or key set
        reason = exc.reason if isinstance(exc, Refusal) else exc.error
        log.error(
            "federated login %r: IdP %s unavailable (%s: %s)", name, login.provider.issuer, reason, exc.description
        )
        return False
    return True


async def _keep_discovering(name: str, login: FederatedLogin) -> None:
    delay = DISCOVERY_RETRY_SECONDS
    while True:
        await asyncio.sleep(delay)
        if await _discover(name, login):
            log.info("federated login %r: IdP %s discovered, its button is enabled", name, login.provider.issuer)
            return
        delay = min(delay * 2, DISCOVERY_RETRY_MAX_SECONDS)


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


def open_vault(settings: Settings) -> Vault:
    """The vault of secrets at rest over the configured KEK backend. A remote backend's KEKs must be loaded
    (``await load_kek(vault)``) before the vault opens anything."""
    return Vault(kek_backend(settings))


async def load_kek(vault: Vault) -> None:
    """Unwrap a remote backend's KEKs (nothing to do for the key file)."""
    kek = vault.kek
    if isinstance(kek, WrappedKeyRing):
        await kek.load()


def kek_backend(settings: Settings, *, kv: KVReader | None = None) -> LocalKeyFile | WrappedKeyRing:
    """``vault.backend``: the local KEK file (created 0600 on first use), or a ring of KEKs wrapped by
    OpenBao/Vault Transit or AWS KMS. The remote clients are imported only when configured (boto3 alone
    costs half a second at startup)."""
    config = settings.vault
    state_dir = settings.server.state_dir
    kv = kv if kv is not None else kv_reader(settings)  # for AWS credentials (the OpenBao token cannot be vault:)
    if config.backend == "file":
        return LocalKeyFile(state_dir / DEFAULT_FILENAME)
    wrapper: KeyWrapper
    if config.backend == "openbao":
        from mcp_bastion.vault.openbao import OpenBaoTransit

        bao = config.openbao
        assert bao is not None  # the settings model requires the section
        wrapper = OpenBaoTransit(
            url=bao.url,
            key_name=bao.key_name,
            mount=bao.mount,
            token=_secret(bao.token, "vault.openbao.token"),
            role_id=bao.role_id,
            secret_id=_secret(bao.secret_id, "vault.openbao.secret_id"),
            namespace=bao.namespace,
            ca_bundle=bao.ca_bundle,
            timeout=bao.timeout,
            allow_insecure_http=bao.allow_insecure_http,
        )
    else:
        from mcp_bastion.vault.awskms import AwsKms

        kms = config.aws_kms
        assert kms is not None
        wrapper = AwsKms(
            key_id=kms.key_id,
            region=kms.region,
            endpoint_url=kms.endpoint_url,
            access_key_id=_secret(kms.access_key_id, "vault.aws_kms.access_key_id", kv),
            secret_access_key=_secret(kms.secret_access_key, "vault.aws_kms.secret_access_key", kv),
            session_token=_secret(kms.session_token, "vault.aws_kms.session_token", kv),
            timeout=kms.timeout,
            allow_insecure_http=kms.allow_insecure_http,
        )
    return WrappedKeyRing(
        wrapper,
        state_dir / REMOTE_KEYS_FILENAME,
        refresh_interval=config.refresh_seconds,
        max_stale=config.max_stale_seconds,
    )


def _secret(reference: str | None, setting: str, kv: KVReader | None = None) -> str | None:
    return resolve_reference(reference, setting, kv=kv) if reference is not None else None


def key_ring(db: Database, vault: Vault, settings: Settings) -> SigningKeyRing:
    """The signing key ring exactly as the gateway builds it, so every process (gateways, ``mcp-bastion keys``,
    ``mcp-bastion token``) agrees on the issuer and the retire window. The window follows the lifetime *cap*
    (the ring's default, equal to the settings' upper bound on ``oauth.access_token_lifetime``), not the
    configured lifetime: lowering the setting must not shorten how long tokens already signed stay valid."""
    return SigningKeyRing(db, vault, settings.server.base_url, leeway_seconds=settings.auth.token_leeway_seconds)


async def mint_token(
    db: Database,
    settings: Settings,
    subject: str,
    audience: str,
    *,
    scope: Iterable[str] = (),
    lifetime: int = 300,
    client_id: str = "cli",
    roles: Iterable[str] = (),
    username: str | None = None,
) -> str:
    """A token of the gateway's own issuer minted outside a running gateway (``mcp-bastion token``, the demo's
    banner): the key ring's current key when the authorization server is on, else the key file."""
    signer: TokenSigner
    if settings.oauth.enabled:
        vault = open_vault(settings)
        await load_kek(vault)
        ring = key_ring(db, vault, settings)
        await ring.load()
        signer = ring
    else:
        signer = LocalIssuer.load_or_create(settings.server.state_dir / KEY_FILENAME, settings.server.base_url)
    extra: dict[str, object] = {}
    if roles:
        extra["roles"] = sorted(set(roles))
    if username:
        extra["preferred_username"] = username
    return signer.mint(subject, audience, scope=scope, lifetime=lifetime, client_id=client_id, extra=extra)


def build_authorization(
    settings: Settings,
    resources: Mapping[str, str],
    *,
    secure: bool,
    scope_policy: ScopePolicy = allow_all,
    kv: KVReader | None = None,
    extra_resources: Mapping[str, Mapping[str, str]] | None = None,
) -> Authorization:
    """``resources`` maps each endpoint name to its resource URL; the scopes come from the upstream settings.
    ``extra_resources``: other resource URLs tokens may be issued for (the aggregate ``/mcp``) -> scopes.
    Call ``startup()`` before serving: the signing keys are read from the database there."""
    oauth = settings.oauth
    kv = kv if kv is not None else kv_reader(settings)  # vault: references (see mcp_bastion.secrets)
    db = Database(default_url(settings))
    kek = kek_backend(settings, kv=kv)
    vault = Vault(kek)
    signer = key_ring(db, vault, settings)
    revocation = RevocationCache()
    offered = {resources[name]: dict(upstream.scopes) for name, upstream in settings.upstreams.items()}
    offered.update({url: dict(scopes) for url, scopes in (extra_resources or {}).items()})
    documents = None
    if oauth.client_id_metadata_documents:
        private = oauth.allow_private_metadata_hosts
        documents = ClientMetadataResolver(
            netguard.Policy(allow_loopback=private, allow_private=private),
            known_scopes=frozenset(scope for scopes in offered.values() for scope in scopes),
        )
    tokens = (
        (resolve_reference(oauth.registration_token, "oauth.registration_token", kv=kv),)
        if oauth.registration_token
        else ()
    )
    server = AuthorizationServer(
        issuer=signer.issuer,
        signer=signer,
        store=cast(OAuthStore, RevokingStore(SQLOAuthStore(db), revocation)),
        # Sealed by the vault, not a per-process key: another replica (or this one after a restart) can
        # still answer a duplicate refresh inside the grace window.
        sealer=VaultSealer(vault),
        resources=offered,
        registration_policy=oauth.registration,
        initial_access_tokens=tokens,
        lifetimes=Lifetimes(
            access_token=oauth.access_token_lifetime,
            refresh_grace=oauth.refresh_grace_seconds,
            family=oauth.refresh_family_lifetime,
        ),
        metadata_documents=documents,
        keys=signer.key_source,
        scope_policy=scope_policy,
        exchange_audiences=oauth.token_exchange_audiences,
    )
    users = SQLUserDirectory(db)
    federation = {
        entry.name: FederatedLogin(oidc_provider(entry, settings.server.base_url, kv=kv)) for entry in oauth.federation
    }
    limiter = _Limiter(LoginRateLimiter())

    def pages(session_key: bytes) -> list[Route]:
        return page_routes(
            server,
            users,
            issuer=signer.issuer,
            secure_cookies=secure,
            login_limiter=limiter,
            session_key=session_key,
            federation=federation,
        )

    revocation.check = server
    # The pages are added by ``startup``: their signing key is in the database (``storage.pagekeys``).
    app = Starlette(routes=oauth_routes(server))
    return Authorization(
        db,
        kek,
        vault,
        signer,
        server,
        users,
        app,
        documents,
        revocation,
        federation,
        pages=pages,
        page_key_file=settings.server.state_dir / PAGE_KEY_FILE,
    )


def oidc_provider(entry: OIDCProviderSettings, base_url: str, *, kv: KVReader | None = None) -> OIDCProvider:
    """The relying-party settings of one ``[[oauth.federation]]`` entry; our redirect URI is derived from the
    public URL, one per IdP (which helps against mix-up: a response can only come back where it belongs)."""
    setting = f"oauth.federation[{entry.name}]"
    secret = entry.client_secret
    domains = entry.allowed_email_domains
    try:
        return OIDCProvider(
            issuer=entry.issuer,
            client_id=entry.client_id,
            redirect_uri=base_url + callback_path(entry.name),
            client_secret=_secret(secret, f"{setting}.client_secret", kv),
            display_name=entry.display_name,
            scopes=entry.scopes,
            username_claims=entry.username_claims,
            groups_claim=entry.groups_claim,
            group_roles={group: frozenset(roles) for group, roles in entry.group_roles.items()},
            default_roles=frozenset(entry.default_roles),
            # An empty list must stay a (refused) empty set: turned into None it would allow every domain.
            allowed_email_domains=frozenset(domains) if domains is not None else None,
            allow_insecure_http=entry.allow_insecure_http,
        )
    except ConfigError as exc:
        raise ConfigError(f"{setting}: {exc.detail}") from exc
