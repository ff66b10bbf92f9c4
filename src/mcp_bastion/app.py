"""Composition: build every component from ``Settings`` and wire the adapters to the gate.

Nothing else imports settings wholesale: each component is handed only its own values here. Everything
compiled once lives here too (host allow-lists, method allow-lists, TLS contexts, trusted issuers), so the
hot path only looks things up.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mcp_bastion.asgi.aggregate import aggregate_endpoint
from mcp_bastion.asgi.app import BastionApp, json_document
from mcp_bastion.asgi.mcp import MCPEndpoint
from mcp_bastion.asgi.pages.upstreamlink import link_routes
from mcp_bastion.audit.record import connection_record
from mcp_bastion.audit.sink import AuditSink, FileSink, StreamSink
from mcp_bastion.delegation.exchange import TokenExchange
from mcp_bastion.delegation.oauthlink import UpstreamOAuth
from mcp_bastion.delegation.static import NoAuth, PerUserSecret, SharedServiceAccount, UpstreamAuth
from mcp_bastion.delegation.store import CredentialStore
from mcp_bastion.errors import ConfigError
from mcp_bastion.integrity.pins import PinStore
from mcp_bastion.integrity.sinks import SinkChecker
from mcp_bastion.jsonrpc.message import JSONObject
from mcp_bastion.jsonrpc.methods import DEFAULT_CLIENT_METHODS
from mcp_bastion.oauth.access_token import AccessTokenVerifier, TrustedIssuer
from mcp_bastion.oauth.jwks import KeySet, KeySource, RemoteKeySet
from mcp_bastion.oauth.localissuer import KEY_FILENAME, LocalIssuer
from mcp_bastion.oauth.metadata import metadata_url_for, protected_resource_metadata
from mcp_bastion.oauth.signer import TokenSigner
from mcp_bastion.pipeline import ADMISSION_STAGES, REQUEST_STAGES, RESPONSE_STAGES
from mcp_bastion.pipeline.authenticate import Authenticate
from mcp_bastion.pipeline.authorize import Authorize
from mcp_bastion.pipeline.filter import FilterLists
from mcp_bastion.pipeline.forward import Forward
from mcp_bastion.pipeline.inspect import InspectResults
from mcp_bastion.pipeline.parse import Parse
from mcp_bastion.pipeline.reply import CheckReply
from mcp_bastion.pipeline.session import Sessions
from mcp_bastion.pipeline.stage import Gate, ResponseStage, Stage
from mcp_bastion.pipeline.throttle import Throttle
from mcp_bastion.pipeline.transport import Transport, hosts_for, origin_of
from mcp_bastion.policy.authorizer import Authorizer, ScopeGrants
from mcp_bastion.policy.catalog import ToolCatalog
from mcp_bastion.policy.ratelimit import Buckets, MemoryBuckets, Rate, RedisBuckets
from mcp_bastion.policy.store import PolicyStore
from mcp_bastion.sandbox.egress import EgressProxy
from mcp_bastion.sandbox.launch import Sandbox
from mcp_bastion.sandbox.profile import SandboxSettings
from mcp_bastion.scan.definitions import DefinitionScan
from mcp_bastion.scan.injection import InjectionDetector
from mcp_bastion.scan.results import Actions, ResultInspector
from mcp_bastion.scan.secrets import pii_detector
from mcp_bastion.secrets import KVReader, kv_reader, resolve_reference
from mcp_bastion.sessions import SessionStore
from mcp_bastion.settings import RateLimitSettings, Settings, UpstreamSettings
from mcp_bastion.storage.linkstore import SQLLinkStore
from mcp_bastion.tls.context import upstream_context
from mcp_bastion.tls.peercert import peer_identity
from mcp_bastion.upstream.aggregate import AGGREGATE
from mcp_bastion.upstream.base import Upstream
from mcp_bastion.upstream.http import HTTPUpstream
from mcp_bastion.upstream.stdio import StdioUpstream
from mcp_bastion.web import Authorization, build_authorization

log = logging.getLogger("mcp_bastion")

JWKS_PATH = "/.well-known/jwks.json"
REAP_INTERVAL_SECONDS = 30.0


@dataclass
class Gateway:
    """Everything one running gateway owns; ``app`` is what the ASGI server serves."""

    settings: Settings
    endpoint: MCPEndpoint
    documents: dict[str, bytes]
    gate: Gate
    sessions: SessionStore
    upstreams: dict[str, Upstream]
    audit: AuditSink
    local_issuer: TokenSigner | None
    """Our own issuer: the authorization server's key ring (usable after ``startup``), or the key file."""
    resources: dict[str, str]
    """Endpoint name -> its resource URL (the audience its tokens must carry)."""
    remote_keys: list[RemoteKeySet] = field(default_factory=list)
    authorization: Authorization | None = None
    """The built-in authorization server, its storage and pages (``oauth.enabled``)."""
    policy: PolicyStore | None = None
    """The policy in force (reloaded on SIGHUP and file changes)."""
    buckets: Buckets | None = None
    """Rate-limit buckets (in-process, or Redis)."""
    pins: PinStore | None = None
    """Pinned tool definitions (loaded at startup, after the database is migrated)."""
    aggregate: MCPEndpoint | None = None
    """The aggregate endpoint ``/mcp`` (``aggregate.enabled``)."""
    app: BastionApp = field(init=False)
    _reaper: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.app = BastionApp(
            mcp=self.endpoint,
            documents=self.documents,
            on_startup=self.startup,
            on_shutdown=self.shutdown,
            https=not self.settings.server.allow_insecure_http,
            web=self.authorization.app if self.authorization is not None else None,
            aggregate=self.aggregate,
        )

    async def startup(self) -> None:
        for message in self.settings.warnings():
            log.warning("INSECURE: %s", message)
        if self.policy is not None:
            await self.policy.start()
        if self.authorization is not None:
            await self.authorization.startup()
        if self.pins is not None:
            await self.pins.load()
        for keys in self.remote_keys:
            await keys.refresh()
        for upstream in self.upstreams.values():
            await upstream.start()
        self._reaper = asyncio.create_task(self._reap())

    async def shutdown(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for session in self.sessions.drain():
            await session.channel.aclose()
        for upstream in self.upstreams.values():
            await upstream.aclose()
        for keys in self.remote_keys:
            await keys.aclose()
        if self.authorization is not None:
            await self.authorization.shutdown()
        if self.policy is not None:
            await self.policy.aclose()
        if self.buckets is not None:
            await self.buckets.aclose()
        self.audit.close()

    def refused_connection(self, reason: str, remote: str) -> None:
        """Audit a connection the HTTP layer refused before the gate saw a request (see ``tls.headguard``)."""
        self.audit.emit(connection_record(reason, remote, request_id=secrets.token_hex(8)))

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(REAP_INTERVAL_SECONDS)
            for session in self.sessions.expired():
                await session.channel.aclose()


def build_gateway(settings: Settings, *, audit: AuditSink | None = None) -> Gateway:
    """Build the whole gateway. Raises ``ConfigError`` for anything wrong in the settings."""
    server = settings.server
    state_dir = server.state_dir
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    base = server.base_url
    resources = {name: f"{base}/mcp/{name}" for name in settings.upstreams}
    combined = settings.aggregate
    # The aggregate endpoint is a resource of its own (RFC 8707): its tokens carry the members' scopes.
    aggregate_resource = {f"{base}/mcp": aggregate_scopes(settings)} if combined.enabled else {}
    kv = kv_reader(settings)  # vault: references: one reader for the whole startup (each secret read once)

    audit_sink = audit if audit is not None else build_audit(settings, state_dir)
    policy = settings.policy
    policy_store = PolicyStore(policy.files, policy.arguments, audit=audit_sink, watch=policy.watch)
    catalog = ToolCatalog.from_settings(settings.upstreams)
    authorizer = Authorizer(policy_store, catalog, policy.arguments)

    trusted: list[TrustedIssuer] = []
    remote: list[RemoteKeySet] = []
    authorization: Authorization | None = None
    local_issuer: TokenSigner | None = None
    if settings.oauth.enabled:
        if not settings.auth.local_issuer:
            raise ConfigError("oauth.enabled needs auth.local_issuer (the authorization server signs with it)")
        authorization = build_authorization(
            settings,
            resources,
            secure=not server.allow_insecure_http,
            scope_policy=ScopeGrants(policy_store, base),
            kv=kv,
            extra_resources=aggregate_resource,
        )
        local_issuer = authorization.keys
        trusted.append(TrustedIssuer(local_issuer.issuer, authorization.keys.key_source))
    elif settings.auth.local_issuer:
        # Without the authorization server there is nothing to rotate keys: one key in a private file.
        file_issuer = LocalIssuer.load_or_create(state_dir / KEY_FILENAME, base)
        local_issuer = file_issuer
        trusted.append(TrustedIssuer(file_issuer.issuer, file_issuer.public_keys()))
    for issuer in settings.auth.issuers:
        keys: KeySource
        if issuer.jwks_file is not None:
            keys = KeySet.from_file(issuer.jwks_file)
        else:
            assert issuer.jwks_url is not None
            keys = RemoteKeySet(issuer.jwks_url, None, allow_insecure_http=issuer.allow_insecure_http)
            remote.append(keys)
        trusted.append(TrustedIssuer(issuer.issuer, keys, algorithms=frozenset(issuer.algorithms)))
    if not trusted and not server.dangerously_allow_unauthenticated and settings.tls.client_auth is None:
        raise ConfigError("no way to authenticate: enable auth.local_issuer, add auth.issuers or tls.client_auth")
    verifier = AccessTokenVerifier(
        trusted,
        leeway_seconds=settings.auth.token_leeway_seconds,
        # Revoked grants and tokens of our own issuer are refused on every call (fail closed on store errors).
        revocation=authorization.revocation if authorization is not None else None,
    )

    limits = settings.limits
    # Pins live in the database the authorization server owns; without it, tools are not pinned (logged).
    integrity = settings.integrity
    detector = InjectionDetector.load()  # one model for definitions (pins) and results (inspect)
    pins = (
        PinStore(
            authorization.db,
            mode=integrity.pin_mode,
            inspector=DefinitionScan(detector) if integrity.scan_definitions else None,
        )
        if authorization is not None
        else None
    )
    if pins is None:
        log.warning("tool definitions are not pinned: pinning needs the database (oauth.enabled)")
    credentials = CredentialStore(authorization.db, authorization.vault) if authorization is not None else None
    linked = oauth_upstreams(settings, authorization, credentials, kv=kv)
    upstreams = {
        name: build_upstream(name, up, settings, credentials, kv=kv, auth=linked.get(name), audit=audit_sink.emit)
        for name, up in settings.upstreams.items()
    }
    sessions = SessionStore(
        max_per_principal=limits.max_sessions_per_principal, idle_seconds=limits.session_idle_seconds
    )
    client_auth = settings.tls.client_auth
    rates = Rates.from_settings(policy.rate_limits)
    buckets = build_buckets(policy.rate_limits, kv=kv)

    stages: dict[type, Stage | ResponseStage] = {
        Transport: Transport(
            allowed_hosts=hosts_for(base, server.host, server.port, server.allowed_hosts),
            allowed_origins=frozenset({origin_of(base), *server.allowed_origins}),
            require_https=not server.allow_insecure_http,
            require_client_cert=client_auth is not None and client_auth.required,
        ),
        Authenticate: Authenticate(
            verifier=verifier,
            resources={**resources, AGGREGATE: f"{base}/mcp"} if combined.enabled else resources,
            mtls_identity=peer_identity if client_auth is not None else None,
            allow_unauthenticated=server.dangerously_allow_unauthenticated,
            roles_claims={issuer.issuer: issuer.roles_claim for issuer in settings.auth.issuers},
            mtls_roles=client_auth.roles if client_auth is not None else None,
        ),
        Parse: Parse(max_json_depth=limits.max_json_depth),
        Sessions: Sessions(sessions),
        Throttle: Throttle(buckets, per_user=rates.per_user, per_client=rates.per_client, per_tool=rates.per_tool),
        Authorize: Authorize(
            allowed_methods={name: allowed_methods(up) for name, up in settings.upstreams.items()},
            authorizer=authorizer,
            pins=pins,
            max_argument_bytes=integrity.max_argument_bytes,
            max_argument_depth=integrity.max_argument_depth,
            sinks=SinkChecker.from_settings(settings.upstreams),
        ),
        Forward: Forward(sessions),
        CheckReply: CheckReply(sessions),
        FilterLists: FilterLists(authorizer, pins),
        InspectResults: InspectResults(
            ResultInspector(
                Actions(
                    secrets=settings.inspect.secrets,
                    pii=settings.inspect.pii,
                    injection=settings.inspect.injection,
                    injection_threshold=settings.inspect.injection_threshold or detector.threshold("result"),
                ),
                pii=pii_detector(settings.inspect.pii_builtins, settings.inspect.pii_patterns),
                instructions=functools.partial(detector.score, kind="result"),
            ),
            pins,
            max_scan_bytes=settings.inspect.max_scan_bytes,
        ),
    }
    gate = Gate(
        admission=[stages[cls] for cls in ADMISSION_STAGES],  # type: ignore[misc]
        request=[stages[cls] for cls in REQUEST_STAGES],  # type: ignore[misc]
        response=[stages[cls] for cls in RESPONSE_STAGES],  # type: ignore[misc]
        audit=audit_sink,
    )
    metadata_urls = {name: metadata_url_for(url) for name, url in resources.items()}
    documents = _documents(settings, resources, metadata_urls, local_issuer)
    aggregate = None
    if combined.enabled:
        aggregate_url = f"{base}/mcp"
        issuers = ([local_issuer.issuer] if local_issuer else []) + [i.issuer for i in settings.auth.issuers]
        documents[metadata_url_for(aggregate_url)[len(base) :]] = json_document(
            protected_resource_metadata(
                resource=aggregate_url,
                authorization_servers=issuers,
                scopes_supported=sorted(aggregate_resource[aggregate_url]),
                resource_name="aggregate",
            )
        )
        aggregate = aggregate_endpoint(
            servers=combined.servers,
            gate=gate,
            upstreams=upstreams,
            sessions=sessions,
            pins=pins,
            audit=audit_sink,
            metadata_url=metadata_url_for(aggregate_url),
            max_body_bytes=limits.max_body_bytes,
            body_timeout=limits.body_timeout,
        )
    endpoint = MCPEndpoint(
        gate=gate,
        upstreams=upstreams,
        sessions=sessions,
        metadata_urls=metadata_urls,
        max_body_bytes=limits.max_body_bytes,
        body_timeout=limits.body_timeout,
    )
    return Gateway(
        settings,
        endpoint,
        documents,
        gate,
        sessions,
        upstreams,
        audit_sink,
        local_issuer,
        resources,
        remote,
        authorization,
        policy_store,
        buckets,
        pins,
        aggregate,
    )


def aggregate_scopes(settings: Settings) -> dict[str, str]:
    """The scopes the aggregate endpoint offers: those of its member servers together."""
    return {
        scope: words for name in settings.aggregate.servers for scope, words in settings.upstreams[name].scopes.items()
    }


def allowed_methods(upstream: UpstreamSettings) -> frozenset[str]:
    return (DEFAULT_CLIENT_METHODS | frozenset(upstream.allow_methods)) - frozenset(upstream.deny_methods)


def upstream_auth(
    name: str, settings: UpstreamSettings, credentials: CredentialStore | None, *, kv: KVReader | None = None
) -> UpstreamAuth:
    """``upstreams.<name>.auth``: what each request to the upstream carries for its user."""
    auth = settings.auth
    if auth.mode == "none":
        return NoAuth()
    if auth.mode == "oauth":
        raise ConfigError(f"upstreams.{name}.auth: oauth is built with its pages (oauth_upstreams)")
    if settings.url is None:
        raise ConfigError(f"upstreams.{name}.auth: credentials for stdio servers are not supported yet (use env)")
    if auth.mode == "token_exchange":
        # The settings model requires all three for this mode.
        endpoint, client_id, secret = auth.token_endpoint or "", auth.client_id or "", auth.client_secret or ""
        return TokenExchange(
            token_endpoint=endpoint,
            client_id=client_id,
            client_secret=resolve_reference(secret, f"upstreams.{name}.auth.client_secret", kv=kv),
            audience=auth.audience or settings.url,
            scopes=auth.scopes,
            ca_bundle=auth.ca_bundle,
            allow_insecure_http=auth.allow_insecure_http,
        )
    if auth.shared_service_account is not None:
        setting = f"upstreams.{name}.auth.shared_service_account"
        secret = resolve_reference(auth.shared_service_account, setting, kv=kv)
        return SharedServiceAccount(secret, header=auth.header, scheme=auth.scheme)
    if credentials is None:
        raise ConfigError(f"upstreams.{name}.auth: per-user credentials live in the database (oauth.enabled)")
    return PerUserSecret(credentials, name, header=auth.header, scheme=auth.scheme)


def oauth_upstreams(
    settings: Settings,
    authorization: Authorization | None,
    credentials: CredentialStore | None,
    *,
    kv: KVReader | None = None,
) -> dict[str, UpstreamOAuth]:
    """The upstreams with ``auth.mode = "oauth"``, and their link pages added to the web side."""
    # Pending links are shared through the database: any replica may serve the link page or the callback.
    links = SQLLinkStore(authorization.db, authorization.vault) if authorization is not None else None
    linked: dict[str, UpstreamOAuth] = {}
    for name, upstream in settings.upstreams.items():
        auth = upstream.auth
        if auth.mode != "oauth":
            continue
        if links is None or credentials is None or upstream.url is None:
            raise ConfigError(f"upstreams.{name}.auth: oauth needs an http upstream and oauth.enabled (its pages)")
        secret = auth.client_secret
        linked[name] = UpstreamOAuth(
            upstream=name,
            issuer=auth.issuer,
            upstream_url=upstream.url,
            client_id=auth.client_id,
            client_secret=resolve_reference(secret, f"upstreams.{name}.auth.client_secret", kv=kv) if secret else None,
            scopes=auth.scopes,
            resource=auth.resource,
            gateway_base=settings.server.base_url,
            store=credentials,
            links=links,
            ca_bundle=auth.ca_bundle,
            allow_insecure_http=auth.allow_insecure_http,
        )
    if linked:
        assert authorization is not None
        assert links is not None
        routes = link_routes(linked, links, authorization.users, issuer=settings.server.base_url)
        authorization.app.router.routes.extend(routes)
    return linked


def build_upstream(
    name: str,
    settings: UpstreamSettings,
    root: Settings,
    credentials: CredentialStore | None = None,
    *,
    kv: KVReader | None = None,
    auth: UpstreamAuth | None = None,
    audit: Callable[[JSONObject], None] | None = None,
) -> Upstream:
    limits = root.limits
    if auth is None:
        auth = upstream_auth(name, settings, credentials, kv=kv)
    if settings.url is not None:
        context = None
        if settings.url.startswith("https:"):
            context = upstream_context(
                ca_bundle=settings.ca_bundle, client_cert=settings.client_cert, client_key=settings.client_key
            )
        return HTTPUpstream(
            name,
            settings.url,
            ssl_context=context,
            connect_timeout=limits.upstream_connect_timeout,
            request_timeout=limits.upstream_timeout,
            max_message_bytes=limits.max_upstream_message_bytes,
            max_json_depth=limits.max_json_depth,
            auth=auth,
        )
    assert settings.command is not None
    profile = settings.sandbox
    # Values may be references (env:, file:, vault:): a secret is injected into the child, never inherited.
    env = {key: resolve_reference(value, f"upstreams.{name}.env.{key}", kv=kv) for key, value in settings.env.items()}
    return StdioUpstream(
        name,
        settings.command,
        env=env,
        cwd=settings.cwd,
        max_message_bytes=limits.max_upstream_message_bytes,
        max_json_depth=limits.max_json_depth,
        request_timeout=min(limits.upstream_timeout, profile.call_timeout_seconds)
        if profile.strict
        else limits.upstream_timeout,
        sandbox=build_sandbox(name, profile, root.server.state_dir, audit) if profile.strict else None,
    )


def build_sandbox(
    name: str,
    profile: SandboxSettings,
    state_dir: Path,
    audit: Callable[[JSONObject], None] | None,
    *,
    where: str | None = None,
) -> Sandbox:
    """A stdio upstream's strict sandbox, with its egress proxy when the profile reaches the network."""
    egress = None
    if profile.network == "proxy":
        egress = EgressProxy(
            name, profile.egress, audit, state_dir.absolute(), allowed_networks=profile.egress_allowed_networks
        )
    return Sandbox(name, profile, state_dir=state_dir, egress=egress, where=where)


@dataclass(frozen=True, slots=True)
class Rates:
    per_user: Rate | None
    per_client: Rate | None
    per_tool: Rate | None

    @classmethod
    def from_settings(cls, limits: RateLimitSettings) -> Rates:
        def parse(text: str | None, name: str) -> Rate | None:
            if text is None or text.strip() == "off":
                return None
            try:
                return Rate.parse(text)
            except ConfigError as exc:
                raise ConfigError(f"policy.rate_limits.{name}: {exc.detail}") from exc

        return cls(
            parse(limits.per_user, "per_user"),
            parse(limits.per_client, "per_client"),
            parse(limits.per_tool, "per_tool"),
        )


def build_buckets(limits: RateLimitSettings, *, kv: KVReader | None = None) -> Buckets:
    if limits.redis_url is None:
        return MemoryBuckets()
    password = limits.redis_password
    secret = resolve_reference(password, "policy.rate_limits.redis_password", kv=kv) if password is not None else None
    return RedisBuckets(limits.redis_url, password=secret)


def build_audit(settings: Settings, state_dir: Path) -> AuditSink:
    path = settings.audit.path
    if path is not None and str(path) == "-":
        return StreamSink()
    return FileSink(path if path is not None else state_dir / "audit.jsonl")


def _documents(
    settings: Settings, resources: Mapping[str, str], metadata_urls: Mapping[str, str], issuer: TokenSigner | None
) -> dict[str, bytes]:
    servers = [i.issuer for i in settings.auth.issuers]
    if issuer is not None:
        servers.insert(0, issuer.issuer)
    documents: dict[str, bytes] = {"/healthz": b'{"status":"ok"}'}
    for name, resource in resources.items():
        path = metadata_urls[name][len(settings.server.base_url) :]
        scopes = sorted(settings.upstreams[name].scopes)
        documents[path] = json_document(
            protected_resource_metadata(
                resource=resource, authorization_servers=servers, scopes_supported=scopes, resource_name=name
            )
        )
    if isinstance(issuer, LocalIssuer):
        # A fixed key can be a fixed document; the key ring's set changes, the authorization server serves it.
        documents[JWKS_PATH] = json_document(issuer.public_keys().as_jwks())
    return documents
