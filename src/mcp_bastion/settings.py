"""Settings: one TOML file plus ``MCP_BASTION_*`` environment overrides, parsed once into a frozen tree.

Secure is the only default. Every option that weakens security says so in its name
(``allow_insecure_http``, ``dangerously_allow_unauthenticated``) and is reported by ``warnings()``,
which the server logs at WARNING on every start. A typo anywhere stops startup with the option's path
(pydantic ``extra="forbid"``). Components receive only their own sub-tree.

Environment overrides use ``__`` to descend: ``MCP_BASTION_SERVER__PORT=9443`` sets ``server.port``.
Values are parsed as TOML values when they can be (``true``, ``8443``, ``["a"]``), else taken as strings.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mcp_bastion.errors import ConfigError
from mcp_bastion.oauth.oidc_client import url_problem
from mcp_bastion.sandbox.profile import SandboxSection, SandboxSettings, select_profile
from mcp_bastion.scan.secrets import pii_detector

ENV_PREFIX = "MCP_BASTION_"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClientAuthSettings(_Model):
    """mTLS: client certificates verified against ``ca``; the certificate subject becomes the principal."""

    ca: Path
    required: bool = False
    """When true every connection must present a certificate; otherwise a bearer token also works."""
    roles: Mapping[str, tuple[str, ...]] = Field(default_factory=dict)
    """Certificate identity (SAN URI or CN) -> its roles, for policies (``principal in Role::"..."``)."""


class TLSSettings(_Model):
    cert: Path | None = None
    """Server certificate chain (PEM). When absent, a local CA and a certificate are made in state_dir."""
    key: Path | None = None
    minimum_version: Literal["1.2", "1.3"] = "1.2"
    """TLS 1.3 is always preferred; 1.2 is accepted with AEAD, forward-secret ciphers only."""
    client_auth: ClientAuthSettings | None = None

    @model_validator(mode="after")
    def _cert_and_key(self) -> TLSSettings:
        if (self.cert is None) != (self.key is None):
            raise ValueError("tls.cert and tls.key must be given together")
        return self


class LimitSettings(_Model):
    """Named limits; each refusal has its own reason code in the audit log."""

    max_body_bytes: int = Field(1_048_576, ge=1024, le=64 * 1_048_576)
    """Largest accepted POST body."""
    max_json_depth: int = Field(64, ge=4, le=512)
    """Deepest accepted JSON nesting, in containers."""
    max_header_bytes: int = Field(16_384, ge=4096, le=1_048_576)
    """Largest accepted request header block (enforced by the HTTP parser)."""
    header_timeout: float = Field(10.0, gt=0, le=120)
    """Seconds a client has to send a complete header block (slowloris defence)."""
    body_timeout: float = Field(30.0, gt=0, le=600)
    """Seconds a client has to send the whole body once headers are in."""
    upstream_connect_timeout: float = Field(10.0, gt=0, le=120)
    upstream_timeout: float = Field(300.0, gt=0, le=3600)
    """Longest a single upstream request may take, streaming included."""
    max_upstream_message_bytes: int = Field(16 * 1_048_576, ge=1024)
    """Largest single message (JSON body or SSE event) accepted from an upstream."""
    max_sessions_per_principal: int = Field(64, ge=1)
    session_idle_seconds: float = Field(3600.0, gt=0)


class IssuerSettings(_Model):
    """An OAuth issuer whose JWT access tokens the gateway accepts."""

    issuer: str
    jwks_url: str | None = None
    jwks_file: Path | None = None
    algorithms: tuple[Literal["ES256", "EdDSA", "RS256"], ...] = ("ES256", "EdDSA", "RS256")
    allow_insecure_http: bool = False
    """Fetch ``jwks_url`` over plain HTTP (only for a loopback host)."""
    roles_claim: str = "roles"
    """The claim listing the user's roles (an array, or a space-separated string), e.g. ``groups``."""

    @model_validator(mode="after")
    def _one_key_source(self) -> IssuerSettings:
        if (self.jwks_url is None) == (self.jwks_file is None):
            raise ValueError("give exactly one of jwks_url or jwks_file")
        return self


class AuthSettings(_Model):
    issuers: tuple[IssuerSettings, ...] = ()
    local_issuer: bool = True
    """Run the built-in issuer (keys in the state directory) and trust its tokens."""
    token_leeway_seconds: int = Field(30, ge=0, le=300)


class OIDCProviderSettings(_Model):
    """An external OpenID Connect provider users may log in with (``[[oauth.federation]]``): the login page
    shows a "Sign in with <display_name>" button. Register the gateway at the IdP with the redirect URI
    ``<public URL>/authorize/federated/<name>/callback``."""

    name: str = Field(pattern=_NAME.pattern)
    """Slug used in the URLs; changing it changes the redirect URI registered at the IdP."""
    display_name: str = Field("", max_length=64)
    """Shown on the button; the issuer's host when empty."""
    issuer: str
    """Exactly as the IdP writes it in its discovery document and ID tokens."""
    client_id: str = Field(min_length=1)
    client_secret: str | None = Field(None, repr=False)
    """A reference (``env:NAME``, ``file:/path``) or a literal; absent for a public client (PKCE alone)."""
    scopes: tuple[str, ...] = ("openid", "profile", "email")
    username_claims: tuple[str, ...] = ("preferred_username", "email", "sub")
    """Tried in order; the first non-empty one names the user (``email`` only when verified)."""
    groups_claim: str | None = "groups"
    group_roles: Mapping[str, tuple[str, ...]] = Field(default_factory=dict)
    """IdP group -> our roles. An IdP group grants nothing unless it is listed here."""
    default_roles: tuple[str, ...] = ()
    """Roles every user of this IdP gets."""
    allowed_email_domains: tuple[str, ...] | None = None
    """When set, only users with a verified email address in one of these domains may log in."""
    allow_insecure_http: bool = False
    """Talk to the IdP over plain http: only to a loopback IP literal (a test IdP). Never in production."""

    @model_validator(mode="after")
    def _issuer_url(self) -> OIDCProviderSettings:
        # The same rule the OIDC client applies to every URL it contacts, checked here so the path is named.
        problem = url_problem(self.issuer, allow_insecure_http=self.allow_insecure_http)
        if problem is not None:
            raise ValueError(f"issuer {self.issuer!r}: {problem}")
        if "openid" not in self.scopes:
            raise ValueError("scopes must include 'openid'")
        return self


class OAuthServerSettings(_Model):
    """The built-in OAuth 2.1 authorization server (issuer = the gateway's public URL)."""

    enabled: bool = True
    access_token_lifetime: int = Field(300, ge=30, le=3600)
    """Seconds an access token lives (RFC 9068 JWT); capped at one hour."""
    refresh_grace_seconds: float = Field(5.0, ge=0, le=60)
    """A concurrent duplicate refresh within this window gets the same new pair instead of killing the family."""
    refresh_family_lifetime: int = Field(30 * 86400, ge=3600, le=365 * 86400)
    """Absolute lifetime of a refresh token family (a login), however often it is refreshed."""
    token_exchange_audiences: Mapping[str, tuple[str, ...]] = Field(default_factory=dict)
    """RFC 8693: resources (URL -> the scopes they offer) for which confidential clients with the
    token-exchange grant may trade a user's access token (e.g. the gateway itself, for its upstreams)."""
    registration: Literal["open", "token", "off"] = "open"
    """Dynamic client registration (RFC 7591): open, requiring an initial access token, or off."""
    registration_token: str | None = None
    """The initial access token when ``registration = "token"`` (a reference: ``env:NAME`` or ``file:/path``)."""
    client_id_metadata_documents: bool = True
    """Accept an https URL as client_id and fetch its metadata document (with an SSRF guard)."""
    allow_private_metadata_hosts: bool = False
    """Let client metadata documents live on loopback/private addresses (tests only)."""
    federation: tuple[OIDCProviderSettings, ...] = ()
    """External OpenID Connect providers offered on the login page beside the local users."""

    @model_validator(mode="after")
    def _token_for_token_mode(self) -> OAuthServerSettings:
        if self.registration == "token" and not self.registration_token:
            raise ValueError('registration = "token" needs registration_token')
        names = [provider.name for provider in self.federation]
        if len(set(names)) != len(names):
            raise ValueError(f"oauth.federation names must be unique, got {names}")
        if self.federation and not self.enabled:
            raise ValueError("oauth.federation needs oauth.enabled (the login page it adds buttons to)")
        return self


class StorageSettings(_Model):
    url: str | None = None
    """SQLAlchemy URL; default ``sqlite+aiosqlite:///<state_dir>/bastion.db``. PostgreSQL: ``postgresql+asyncpg://…``."""


class AuditSettings(_Model):
    path: Path | None = None
    """JSON-lines file; defaults to ``<state_dir>/audit.jsonl``. ``-`` writes to standard output."""


_SINK_OPTIONS: Mapping[str, frozenset[str]] = {
    "path": frozenset({"roots", "allow_relative", "resolve_symlinks"}),
    "shell": frozenset({"allowed_commands", "refuse_options"}),
    "sql": frozenset({"dialect", "read_only"}),
    "sql_identifier": frozenset({"dialect"}),
    "url": frozenset({"allow_http", "allow_loopback", "allow_private", "allowed_hosts", "allowed_networks"}),
    "none": frozenset(),
}


class SinkSettings(_Model):
    """How one tool argument is checked before it reaches its sink (``integrity.sinks``); ``kind = "none"``
    turns an inferred check off. Each option belongs to one kind; giving it for another is an error."""

    kind: Literal["path", "shell", "sql", "sql_identifier", "url", "none"]
    roots: tuple[str, ...] = ()
    """path: absolute POSIX directories the path must stay inside (none: only the lexical checks)."""
    allow_relative: bool = False
    """path: accept relative paths as relative to the first root (only if the tool resolves them there)."""
    resolve_symlinks: bool = True
    """path: where a root exists on this machine (a local stdio server), also resolve symlinks in it."""
    allowed_commands: tuple[str, ...] = ()
    """shell: the commands (argv[0]) allowed; empty: any command without shell metacharacters."""
    refuse_options: bool = False
    """shell: refuse every word that starts with '-' (the first word never may)."""
    dialect: Literal["generic", "ansi", "sqlite", "postgres", "mysql", "mssql"] = "generic"
    """sql, sql_identifier: how literals and comments are read; generic refuses what any dialect would."""
    read_only: bool | None = None
    """sql: allow read statements only (default: when the tool is read-only)."""
    allow_http: bool = False
    """url: accept plain http URLs too (only https otherwise)."""
    allow_loopback: bool = False
    allow_private: bool = False
    allowed_hosts: tuple[str, ...] = ()
    """url: names trusted to resolve to internal addresses (never to a cloud metadata address)."""
    allowed_networks: tuple[str, ...] = ()
    """url: CIDRs allowed whatever their class (the only way to a cloud metadata address)."""

    @model_validator(mode="after")
    def _options_of_kind(self) -> SinkSettings:
        foreign = self.model_fields_set - {"kind"} - _SINK_OPTIONS[self.kind]
        if foreign:
            raise ValueError(f"{', '.join(sorted(foreign))} do not apply to kind {self.kind!r}")
        for root in self.roots:
            if not root.startswith("/") or {".", ".."} & set(root.split("/")) or "\\" in root or "\x00" in root:
                raise ValueError(f"roots must be absolute POSIX paths without . or .. segments, got {root!r}")
        for network in self.allowed_networks:
            ipaddress.ip_network(network, strict=True)
        return self


class ToolSettings(_Model):
    """What the gateway believes about one tool, whatever its server says."""

    scopes: tuple[str, ...] | None = None
    """The OAuth scopes a call needs (replaces the ones derived from annotations; ``[]``: none)."""
    read_only: bool | None = None
    destructive: bool | None = None
    idempotent: bool | None = None
    open_world: bool | None = None
    sinks: Mapping[str, SinkSettings] = Field(default_factory=dict)
    """Argument (name, or JSON pointer with ``*`` for every item) -> its sink check; replaces the inferred one."""


class RateLimitSettings(_Model):
    """Token buckets ("60/minute", "10/second burst 20"); "off" leaves that dimension unlimited."""

    per_user: str | None = "600/minute burst 100"
    per_client: str | None = None
    per_tool: str | None = "120/minute burst 30"
    """Per (user, tool): one user hammering one tool."""
    redis_url: str | None = None
    """Share the buckets between replicas (``redis://`` or ``rediss://``); in-process when absent."""
    redis_password: str | None = None
    """A secret reference (``env:NAME``, ``file:/path``) or literal."""


class OpenBaoSettings(_Model):
    """The vault's root key in OpenBao / HashiCorp Vault Transit (a derived aes256-gcm96 key)."""

    url: str
    key_name: str = "mcp-bastion"
    mount: str = "transit"
    token: str | None = None
    """A secret reference (``env:BAO_TOKEN``, ``file:/run/secrets/bao``), or give AppRole below."""
    role_id: str | None = None
    secret_id: str | None = None
    """A secret reference."""
    namespace: str | None = None
    ca_bundle: Path | None = None
    timeout: float = Field(5.0, gt=0, le=60)
    allow_insecure_http: bool = False
    """Plain http to a loopback OpenBao (development only)."""

    @model_validator(mode="after")
    def _one_auth(self) -> OpenBaoSettings:
        approle = self.role_id is not None or self.secret_id is not None
        if (self.token is None) == (not approle) or (approle and (self.role_id is None or self.secret_id is None)):
            raise ValueError("give either token, or role_id and secret_id (AppRole)")
        return self


class AwsKmsSettings(_Model):
    """The vault's root key in AWS KMS (a symmetric key; its id, ARN or alias)."""

    key_id: str
    region: str
    endpoint_url: str | None = None
    """A VPC endpoint, or a test server."""
    access_key_id: str | None = None
    """A secret reference; absent: the default AWS credential chain (instance role, environment, ...)."""
    secret_access_key: str | None = None
    session_token: str | None = None
    timeout: float = Field(5.0, gt=0, le=60)
    allow_insecure_http: bool = False
    """Plain http to a loopback endpoint (tests only)."""


class VaultSettings(_Model):
    """Where the vault's key-encryption keys come from (secrets at rest: signing keys, tokens, ...)."""

    backend: Literal["file", "openbao", "aws-kms"] = "file"
    """``file``: a 0600 key file in the state directory; otherwise KEKs wrapped by the remote root key."""
    openbao: OpenBaoSettings | None = None
    aws_kms: AwsKmsSettings | None = None
    refresh_seconds: float = Field(300.0, gt=0, le=3600)
    """How often KEKs are unwrapped again (a remote that revoked us is noticed within this time)."""
    max_stale_seconds: float = Field(900.0, gt=0, le=86400)
    """How long unwrapped KEKs stay usable while the remote cannot be reached; then the vault refuses."""

    @model_validator(mode="after")
    def _section_for_backend(self) -> VaultSettings:
        if self.backend == "openbao" and self.openbao is None:
            raise ValueError("backend 'openbao' needs a [vault.openbao] section")
        if self.backend == "aws-kms" and self.aws_kms is None:
            raise ValueError("backend 'aws-kms' needs a [vault.aws_kms] section")
        if self.refresh_seconds >= self.max_stale_seconds:
            raise ValueError("refresh_seconds must be below max_stale_seconds")
        return self


class IntegritySettings(_Model):
    """Tool integrity (``integrity.pins``)."""

    pin_mode: Literal["trust_on_first_use", "strict"] = "trust_on_first_use"
    """``trust_on_first_use``: a tool is pinned the first time it is seen, a later change is quarantined;
    ``strict``: new tools are quarantined too, until an administrator approves them."""
    scan_definitions: bool = True
    """Scan every new or changed definition for poisoning (``scan.definitions``); flagged items are
    quarantined until approved. Turning it off is logged at every start."""
    max_argument_bytes: int = Field(524_288, ge=64, le=64 * 1_048_576)
    """A ``tools/call``'s arguments, serialised, at most this long (the body limit caps the whole message)."""
    max_argument_depth: int = Field(16, ge=2, le=256)
    """Nesting of a ``tools/call``'s arguments (the arguments object itself is depth 1)."""


InspectAction = Literal["redact", "block", "annotate", "off"]


class InspectSettings(_Model):
    """Result inspection (``[inspect]``, ``scan.results``): what happens when a tool result, a resource or a
    prompt carries secrets, PII or injected instructions. Terminal escapes, control and invisible
    characters are always stripped; an ``outputSchema`` of a pinned tool is always enforced."""

    secrets: InspectAction = "redact"
    """Credentials (private keys, cloud and API tokens, JWTs, passwords): each becomes ``[REDACTED:<name>]``.
    ``annotate`` and ``off`` let secrets reach the model (warned about at start)."""
    pii: InspectAction = "redact"
    """Action for the PII detectors below; with none configured, nothing is PII."""
    pii_builtins: tuple[Literal["email", "credit_card", "iban", "us_ssn"], ...] = ()
    """Built-in PII detectors to switch on (card numbers pass a Luhn check, IBANs their mod-97 check)."""
    pii_patterns: Mapping[str, str] = Field(default_factory=dict)
    """Your own PII detectors: name (``[a-z][a-z0-9_]*``) -> Python regular expression."""
    injection: InspectAction = "annotate"
    """Text that instructs the model: ``annotate`` keeps it and warns the model (a classifier's score is
    evidence, not proof: refusing would break honest results about, say, prompt injection); ``block``
    refuses the result; ``redact`` replaces the text."""
    injection_threshold: float | None = Field(None, gt=0, le=1)
    """Score (0..1) from which a text counts as instructions; default: the threshold the shipped model was
    calibrated with (1% false positives on its development split; ``scripts/eval`` prints the figures)."""
    max_scan_bytes: int = Field(4 * 1_048_576, ge=1024, le=256 * 1_048_576)
    """Larger results are refused (``result_blocked_too_large``), never passed unscanned."""

    @model_validator(mode="after")
    def _patterns_compile(self) -> InspectSettings:
        pii_detector(self.pii_builtins, self.pii_patterns)  # raises ValueError naming the bad pattern
        return self


class PolicySettings(_Model):
    """Cedar policies (``policy/`` explains the schema). No files: every call is denied (logged at start)."""

    files: tuple[Path, ...] = ()
    arguments: Mapping[str, Literal["String", "Long", "Bool", "Set<String>", "Set<Long>"]] = Field(default_factory=dict)
    """Tool/prompt arguments policies may read, with their Cedar types (others are invisible to policies)."""
    watch: bool = True
    """Reload when a file changes (SIGHUP always reloads); a bad new set is refused, the old one stays."""
    rate_limits: RateLimitSettings = RateLimitSettings()


class UpstreamAuthSettings(_Model):
    """How the gateway authenticates to an upstream on behalf of the user (never with the user's token)."""

    mode: Literal["none", "static", "token_exchange", "oauth"] = "none"
    """``static``: each user's own secret from the vault (``mcp-bastion credentials set``), or the
    ``shared_service_account`` when one is named. ``token_exchange``: RFC 8693 — the user's token traded at
    ``token_endpoint`` for one with the upstream as audience and the narrowest scopes. ``oauth``: the gateway
    is an OAuth client of the upstream's authorization server (``issuer``); each user links their account
    once through a URL the gateway gives their client (MCP URL elicitation)."""
    header: str = Field("authorization", pattern=r"^[A-Za-z0-9-]{1,64}$")
    scheme: str = Field("Bearer", pattern=r"^[A-Za-z0-9._~+/-]{0,32}$")
    """Put before the secret (``Bearer <secret>``); empty for a bare API key header."""
    shared_service_account: str | None = None
    """One secret for every user (a secret reference). Named for what it is: logged at every start."""
    token_endpoint: str | None = None
    """token_exchange: the upstream's authorization server's token endpoint (https; http only on loopback
    with ``allow_insecure_http``)."""
    issuer: str | None = None
    """oauth: the upstream's authorization server (its RFC 8414 / OIDC metadata is read from there); absent:
    found from the upstream's RFC 9728 protected-resource metadata."""
    resource: str | None = None
    """oauth: the RFC 8707 ``resource`` to ask for (none when absent: not every server supports it)."""
    client_id: str | None = None
    client_secret: str | None = None
    """A secret reference (the gateway is a confidential client of that authorization server)."""
    audience: str | None = None
    """The upstream's resource URL (default: the upstream's ``url``)."""
    scopes: tuple[str, ...] = ()
    """The narrowest scopes to ask for (empty: what the authorization server grants by default)."""
    ca_bundle: Path | None = None
    allow_insecure_http: bool = False

    @model_validator(mode="after")
    def _shared_only_for_static(self) -> UpstreamAuthSettings:
        if self.shared_service_account is not None and self.mode != "static":
            raise ValueError("shared_service_account needs mode = 'static'")
        if self.mode == "token_exchange" and not (self.token_endpoint and self.client_id and self.client_secret):
            raise ValueError("token_exchange needs token_endpoint, client_id and client_secret")
        if self.header.lower() in ("cookie", "host", "content-length", "transfer-encoding", "mcp-session-id"):
            raise ValueError(f"header {self.header!r} cannot carry a credential")
        return self


class UpstreamSettings(_Model):
    """One MCP server behind the gateway, served at ``/mcp/<name>``. Exactly one of url or command."""

    url: str | None = None
    """Remote MCP server (Streamable HTTP). https required unless ``allow_insecure_http`` for loopback."""
    command: tuple[str, ...] | None = None
    """Local MCP server over stdio: argv of the child the gateway spawns and supervises."""
    env: Mapping[str, str] = Field(default_factory=dict)
    """The child's whole environment (nothing is inherited but PATH)."""
    cwd: Path | None = None
    ca_bundle: Path | None = None
    """Pinned CA bundle for the upstream's TLS certificate (system roots when absent)."""
    client_cert: Path | None = None
    client_key: Path | None = None
    allow_insecure_http: bool = False
    allow_methods: tuple[str, ...] = ()
    """Extra JSON-RPC methods forwarded to this upstream besides the MCP ones."""
    scopes: Mapping[str, str] = Field(default_factory=dict)
    """OAuth scopes this server's tokens may carry, each with the words the consent page shows."""
    deny_methods: tuple[str, ...] = ()
    """MCP methods refused for this upstream."""
    scope_prefix: str | None = None
    """Derived tool scopes are ``<prefix>.read`` / ``.write`` / ``.delete`` (default: the upstream's name)."""
    tools: Mapping[str, ToolSettings] = Field(default_factory=dict)
    """Per-tool overrides of what the server declares (annotations are the server's claims, not facts)."""
    auth: UpstreamAuthSettings = UpstreamAuthSettings()
    sandbox: SandboxSettings = SandboxSettings()
    """How a stdio server is confined (``sandbox/profile.py``): strict unless ``"dangerously_disabled"``. A
    profile name or ``{profile = ...}`` is resolved by ``Settings`` before this model sees it."""

    @model_validator(mode="after")
    def _one_transport(self) -> UpstreamSettings:
        if (self.url is None) == (self.command is None):
            raise ValueError("give exactly one of url or command")
        if self.url is not None:
            parts = urlsplit(self.url)
            if parts.scheme not in ("https", "http") or not parts.hostname:
                raise ValueError(f"url must be an absolute https URL, got {self.url!r}")
            if parts.scheme == "http":
                if not self.allow_insecure_http:
                    raise ValueError("plain http upstream needs allow_insecure_http = true")
                if not _is_loopback(parts.hostname):
                    raise ValueError("plain http upstreams are allowed only on loopback")
        if self.command is not None and not self.command:
            raise ValueError("command must not be empty")
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key must be given together")
        return self


class AggregateSettings(_Model):
    """The aggregate endpoint ``/mcp``: the ``servers`` named here served as one MCP server, their tools and
    prompts named ``<server>.<name>`` (``asgi.aggregate``). Off unless enabled; every server is named, so a
    new upstream never joins the tools a model sees through ``/mcp`` by accident."""

    enabled: bool = False
    servers: tuple[str, ...] = ()
    """Upstream names, in the order their items are listed (required when enabled)."""

    @model_validator(mode="after")
    def _servers_named(self) -> AggregateSettings:
        if self.enabled and not self.servers:
            raise ValueError("aggregate.enabled needs aggregate.servers (the upstreams it serves)")
        if len(set(self.servers)) != len(self.servers):
            raise ValueError(f"aggregate.servers must be unique, got {list(self.servers)}")
        return self


class ServerSettings(_Model):
    host: str = "127.0.0.1"
    port: int = Field(8443, ge=0, le=65535)
    public_url: str | None = None
    """The URL clients use (behind a TLS-terminating proxy, say). Default: https://<host>:<port>."""
    state_dir: Path = Path("state")
    allow_insecure_http: bool = False
    """Serve plain HTTP. Refused unless bound to loopback; logged as a WARNING on every start."""
    allowed_hosts: tuple[str, ...] = ()
    """Extra Host header values accepted (DNS-rebinding defence); the public URL's host is always allowed."""
    allowed_origins: tuple[str, ...] = ()
    """Browser origins allowed to call MCP endpoints; requests without Origin are not affected."""
    dangerously_allow_unauthenticated: bool = False
    """Serve MCP without any credential. Never do this outside a throw-away test."""

    @model_validator(mode="after")
    def _insecure_only_on_loopback(self) -> ServerSettings:
        if self.allow_insecure_http and not _is_loopback(self.host):
            raise ValueError("allow_insecure_http is refused unless server.host is a loopback address")
        if self.dangerously_allow_unauthenticated and not _is_loopback(self.host):
            raise ValueError("dangerously_allow_unauthenticated is refused unless bound to loopback")
        return self

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        scheme = "http" if self.allow_insecure_http else "https"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"


class Settings(_Model):
    server: ServerSettings = ServerSettings()
    tls: TLSSettings = TLSSettings()
    auth: AuthSettings = AuthSettings()
    oauth: OAuthServerSettings = OAuthServerSettings()
    storage: StorageSettings = StorageSettings()
    limits: LimitSettings = LimitSettings()
    audit: AuditSettings = AuditSettings()
    policy: PolicySettings = PolicySettings()
    vault: VaultSettings = VaultSettings()
    integrity: IntegritySettings = IntegritySettings()
    inspect: InspectSettings = InspectSettings()
    sandbox: SandboxSection = SandboxSection()
    """``[sandbox.profiles.<name>]``: named profiles, selected by ``upstreams.<name>.sandbox``."""
    upstreams: dict[Annotated[str, Field(pattern=_NAME.pattern)], UpstreamSettings] = Field(default_factory=dict)
    """Names never contain ``.``: the aggregate endpoint splits ``<server>.<tool>`` at the first one."""
    aggregate: AggregateSettings = AggregateSettings()

    @model_validator(mode="before")
    @classmethod
    def _select_sandbox_profiles(cls, data: Any) -> Any:
        # Once, here: the rest of the code sees each upstream's sandbox as one concrete profile, and its
        # consistency checks run on the named profile with the upstream's overrides applied.
        if not isinstance(data, Mapping) or not isinstance(upstreams := data.get("upstreams"), Mapping):
            return data
        section = data.get("sandbox")
        profiles = section.get("profiles") if isinstance(section, Mapping) else None
        selected = {
            name: {**up, "sandbox": select_profile(up["sandbox"], profiles)}
            if isinstance(up, Mapping) and "sandbox" in up
            else up
            for name, up in upstreams.items()
        }
        return {**data, "upstreams": selected}

    @field_validator("upstreams")
    @classmethod
    def _some_upstream(cls, value: dict[str, UpstreamSettings]) -> dict[str, UpstreamSettings]:
        if not value:
            raise ValueError("configure at least one upstream: [upstreams.<name>]")
        return value

    @model_validator(mode="after")
    def _aggregate_members_exist(self) -> Settings:
        unknown = [name for name in self.aggregate.servers if name not in self.upstreams]
        if unknown:
            raise ValueError(f"aggregate.servers names unknown upstreams: {unknown}")
        return self

    def warnings(self) -> list[str]:
        """Every weakening option in force, worded for the startup log."""
        found: list[str] = []
        if self.server.allow_insecure_http:
            found.append("server.allow_insecure_http = true: MCP traffic and tokens travel in plain text")
        if self.server.dangerously_allow_unauthenticated:
            found.append("server.dangerously_allow_unauthenticated = true: anyone on loopback can call tools")
        for name, upstream in self.upstreams.items():
            if upstream.command is not None and not upstream.sandbox.strict:
                found.append(
                    f'upstreams.{name}.sandbox = "dangerously_disabled": the local server runs unconfined, with '
                    "the gateway's rights (its files, keys, network)"
                )
            if opened := list(upstream.sandbox.egress_allowed_networks):
                found.append(
                    f"upstreams.{name}.sandbox.egress_allowed_networks = {opened}: the sandboxed server may "
                    "reach these private/loopback networks through the egress proxy"
                )
            if upstream.allow_insecure_http:
                found.append(f"upstreams.{name}.allow_insecure_http = true: upstream traffic is not encrypted")
            if upstream.allow_methods:
                found.append(f"upstreams.{name}.allow_methods forwards non-MCP methods: {upstream.allow_methods}")
        for name, upstream in self.upstreams.items():
            if upstream.auth.shared_service_account is not None:
                found.append(
                    f"upstreams.{name}.auth.shared_service_account: every user reaches {name} with the same "
                    "credential (no per-user accountability upstream)"
                )
        vault = self.vault
        if vault.openbao is not None and vault.openbao.allow_insecure_http:
            found.append(
                "vault.openbao.allow_insecure_http = true: OpenBao (root key, vault: references) over plain http"
            )
        if vault.backend == "aws-kms" and vault.aws_kms is not None and vault.aws_kms.allow_insecure_http:
            found.append("vault.aws_kms.allow_insecure_http = true: KMS is reached over plain http")
        if self.oauth.allow_private_metadata_hosts:
            found.append("oauth.allow_private_metadata_hosts = true: client metadata fetched from private hosts")
        for provider in self.oauth.federation:
            if provider.allow_insecure_http:
                found.append(
                    f"oauth.federation[{provider.name}].allow_insecure_http = true: "
                    "logins with that IdP travel over plain http"
                )
        for issuer in self.auth.issuers:
            if issuer.allow_insecure_http:
                found.append(f"auth.issuers[{issuer.issuer}].allow_insecure_http = true: JWKS fetched over http")
        for name, upstream in self.upstreams.items():
            for tool, overrides in upstream.tools.items():
                for argument, sink in overrides.sinks.items():
                    where = f"upstreams.{name}.tools.{tool}.sinks.{argument}"
                    weakened = [
                        option
                        for option, on in (
                            ("allow_loopback", sink.allow_loopback),
                            ("allow_private", sink.allow_private),
                            ("allowed_networks", bool(sink.allowed_networks)),
                            ("allow_relative", sink.allow_relative),
                            ("resolve_symlinks = false", not sink.resolve_symlinks),
                            ("kind = none", sink.kind == "none"),
                        )
                        if on
                    ]
                    if weakened:
                        found.append(f"{where}: {', '.join(weakened)} (an argument sink check is weakened)")
        if not self.integrity.scan_definitions:
            found.append("integrity.scan_definitions = false: poisoned tool descriptions are trusted on first use")
        if self.inspect.secrets in ("annotate", "off"):
            found.append(f"inspect.secrets = {self.inspect.secrets!r}: credentials in results reach the model")
        return found


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load_settings(path: Path | None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read ``path`` (TOML) and the environment into a validated ``Settings`` or raise ``ConfigError``."""
    data: dict[str, object] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    apply_env_overrides(data, os.environ if environ is None else environ)
    return parse_settings(data, source=str(path) if path else "defaults")


def parse_settings(data: Mapping[str, object], *, source: str = "config") -> Settings:
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{source}: {problems}") from exc


def apply_env_overrides(data: dict[str, object], environ: Mapping[str, str]) -> None:
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        path = [part.lower() for part in key[len(ENV_PREFIX) :].split("__") if part]
        if not path:
            continue
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{key}: {'.'.join(path)} is not a table")
            node = child
        node[path[-1]] = _env_value(raw)


def _env_value(raw: str) -> object:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw
