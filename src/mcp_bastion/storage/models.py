"""The tables, as SQLAlchemy declarative classes; the same schema on SQLite and PostgreSQL.

Conventions:
- times are POSIX seconds in ``DOUBLE`` columns, as in ``oauth.store`` (the callers pass ``now``);
- secrets never appear: authorization codes, refresh tokens and client secrets are SHA-256 digests
  (32-byte ``BLOB``/``BYTEA``), passwords are argon2id hashes; the recoverable values (the successor pair
  kept for the refresh grace window, the private halves of signing keys) are ciphertext sealed by the caller;
- scopes are sorted JSON arrays, roles too; client metadata is one JSON document;
- there are no foreign keys between the OAuth tables: ``OAuthStore`` does not order its writes (a code may
  name a family written after it) and ``purge`` removes orphans itself. ``users`` stands alone too: a
  token's ``subject`` may come from a federated identity provider, not from this table;
- every constraint and index has a name (``NAMING``) so alembic's batch mode can recreate SQLite tables.

``tests/storage/test_migrations.py`` checks that the migrations create exactly these tables.
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import JSON, Boolean, Double, LargeBinary, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING: Final = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

DIGEST_BYTES: Final = 32
"""SHA-256."""


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class UserRow(Base):
    """A local user (``identity.users``)."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    """A random UUID: the ``sub`` of the user's tokens (never reused, unlike a username could be)."""
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    """argon2id, PHC string format (``$argon2id$v=19$m=…,t=…,p=…$salt$hash``)."""
    roles: Mapped[list[str]] = mapped_column(JSON)
    disabled: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[float] = mapped_column(Double)


class ClientRow(Base):
    """``oauth.store.ClientRecord``."""

    __tablename__ = "oauth_clients"

    client_id: Mapped[str] = mapped_column(String, primary_key=True)
    """An opaque id, or for ``metadata`` clients the https URL of their metadata document."""
    kind: Mapped[str] = mapped_column(String(16))
    client_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    """RFC 7591 metadata; the attribute is renamed because declarative classes reserve ``metadata``."""
    secret_hash: Mapped[bytes | None] = mapped_column(LargeBinary(DIGEST_BYTES))
    created_at: Mapped[float] = mapped_column(Double)
    expires_at: Mapped[float | None] = mapped_column(Double, index=True)


class PendingRow(Base):
    """``oauth.store.PendingRecord``."""

    __tablename__ = "oauth_pending"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    client_id: Mapped[str] = mapped_column(String)
    redirect_uri: Mapped[str] = mapped_column(Text)
    state: Mapped[str | None] = mapped_column(Text)
    code_challenge: Mapped[str] = mapped_column(String(128))
    resource: Mapped[str] = mapped_column(Text)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Double)
    expires_at: Mapped[float] = mapped_column(Double, index=True)


class CodeRow(Base):
    """``oauth.store.CodeRecord``: ``used_at`` is set once, by a conditional UPDATE."""

    __tablename__ = "oauth_codes"

    code_hash: Mapped[bytes] = mapped_column(LargeBinary(DIGEST_BYTES), primary_key=True)
    client_id: Mapped[str] = mapped_column(String)
    user_id: Mapped[str] = mapped_column(String)
    redirect_uri: Mapped[str] = mapped_column(Text)
    code_challenge: Mapped[str] = mapped_column(String(128))
    resource: Mapped[str] = mapped_column(Text)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    family_id: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[float] = mapped_column(Double)
    expires_at: Mapped[float] = mapped_column(Double, index=True)
    used_at: Mapped[float | None] = mapped_column(Double)


class FamilyRow(Base):
    """``oauth.store.FamilyRecord``: one grant and every refresh token rotated from it."""

    __tablename__ = "oauth_token_families"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    client_id: Mapped[str] = mapped_column(String)
    subject: Mapped[str] = mapped_column(String)
    resource: Mapped[str] = mapped_column(Text)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Double)
    expires_at: Mapped[float] = mapped_column(Double, index=True)
    revoked_at: Mapped[float | None] = mapped_column(Double)
    reason: Mapped[str | None] = mapped_column(String(64))
    username: Mapped[str] = mapped_column(String, server_default="")
    roles: Mapped[list[str]] = mapped_column(JSON, server_default="[]")


class RefreshRow(Base):
    """``oauth.store.RefreshRecord``: ``rotated_at`` is set once, by a conditional UPDATE."""

    __tablename__ = "oauth_refresh_tokens"

    token_hash: Mapped[bytes] = mapped_column(LargeBinary(DIGEST_BYTES), primary_key=True)
    family_id: Mapped[str] = mapped_column(String(128), index=True)
    created_at: Mapped[float] = mapped_column(Double)
    rotated_at: Mapped[float | None] = mapped_column(Double)
    successor: Mapped[bytes | None] = mapped_column(LargeBinary)


class ConsentRow(Base):
    """``oauth.store.ConsentRecord``: one row per (user, client, resource)."""

    __tablename__ = "oauth_consents"

    user_id: Mapped[str] = mapped_column(String, primary_key=True)
    client_id: Mapped[str] = mapped_column(String, primary_key=True)
    resource: Mapped[str] = mapped_column(Text, primary_key=True)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    granted_at: Mapped[float] = mapped_column(Double)
    revoked_at: Mapped[float | None] = mapped_column(Double)


class RevokedJTIRow(Base):
    """An access token revoked before its expiry (RFC 7009); kept until ``expires_at``."""

    __tablename__ = "oauth_revoked_jtis"

    jti: Mapped[str] = mapped_column(String(255), primary_key=True)
    expires_at: Mapped[float] = mapped_column(Double, index=True)


class AssertionJTIRow(Base):
    """A client assertion's ``jti`` already used (RFC 7523 §3); kept until the assertion expires."""

    __tablename__ = "oauth_assertion_jtis"

    client_id: Mapped[str] = mapped_column(String, primary_key=True)
    jti: Mapped[str] = mapped_column(String(255), primary_key=True)
    expires_at: Mapped[float] = mapped_column(Double, index=True)


class SigningKeyRow(Base):
    """A token-signing key of the built-in authorization server (``oauth.signingkeys``).

    The private half is a vault blob sealed for (owner = ``kid``, purpose ``signing-key``): never stored in
    the clear. ``public_jwk`` is for operators and other tools; the key ring itself trusts only the public
    key it derives from the sealed private half.
    """

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(128), primary_key=True)
    """RFC 7638 thumbprint of the public key."""
    alg: Mapped[str] = mapped_column(String(16))
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    private_jwk: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[float] = mapped_column(Double)
    retired_at: Mapped[float | None] = mapped_column(Double)
    """When a newer key took over signing; None for the key that signs now."""
    expires_at: Mapped[float | None] = mapped_column(Double, index=True)
    """When the key leaves the JWKS (its last tokens have expired); None while it signs."""


class UpstreamCredentialRow(Base):
    """A user's own credential for one upstream (``delegation.store``), sealed by the vault.

    ``id`` is ``<upstream>\\x1f<issuer>\\x1f<subject>``; it is also the vault blob's owner, so a blob copied
    to another user's or another upstream's row does not open.
    """

    __tablename__ = "upstream_credentials"

    id: Mapped[str] = mapped_column(String, primary_key=True)
    upstream: Mapped[str] = mapped_column(String(128), index=True)
    principal: Mapped[str] = mapped_column(String)
    """``Principal.key`` of the user (issuer and subject)."""
    secret: Mapped[bytes] = mapped_column(LargeBinary)
    updated_at: Mapped[float] = mapped_column(Double)


class ToolPinRow(Base):
    """``integrity.pins``: the definition of a tool, prompt, resource or resource template as first seen (or
    last approved), and a changed one waiting. (The table kept its first name when it grew kinds.)"""

    __tablename__ = "tool_pins"

    id: Mapped[str] = mapped_column(String, primary_key=True)
    """``<kind>\\x1f<server>\\x1f<name>``."""
    kind: Mapped[str] = mapped_column(String(16), server_default="tool")
    """``tool``, ``prompt``, ``resource`` or ``template``."""
    server: Mapped[str] = mapped_column(String(128), index=True)
    name: Mapped[str] = mapped_column(String)
    """The tool or prompt name, the resource URI or the template's URI template."""
    digest: Mapped[str] = mapped_column(String(64))
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16))
    """``approved`` or ``quarantined``."""
    pending_digest: Mapped[str | None] = mapped_column(String(64))
    pending: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """The changed definition the server sends now, kept for ``pins diff`` until approved or rejected."""
    first_seen: Mapped[float] = mapped_column(Double)
    changed_at: Mapped[float | None] = mapped_column(Double)
    reason: Mapped[str | None] = mapped_column(String(32))
    """Why it is quarantined (``changed``, ``new``, ``flagged``, ``shadowing``); ``approved`` once an
    administrator approved it; empty for a definition trusted on first use."""
    findings: Mapped[list[Any] | None] = mapped_column(JSON)
    """What the definition scan found (categories and short reasons, never long text)."""


class UpstreamLinkRow(Base):
    """A pending account link of ``mode = "oauth"`` upstream auth (``storage.linkstore``), shared by replicas.

    No secret is stored in the clear: ``state`` and the browser binding are SHA-256 digests (the callback
    brings the values), the PKCE verifier is a vault blob sealed for (owner = ``id``, purpose
    ``upstream-link``). ``state_hash`` is NULL until the user signed in (started); only started links
    can be taken, by one ``DELETE … RETURNING``.
    """

    __tablename__ = "upstream_links"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    upstream: Mapped[str] = mapped_column(String(128))
    principal: Mapped[str] = mapped_column(String, index=True)
    """``Principal.key``: the per-user cap counts these."""
    subject: Mapped[str] = mapped_column(String)
    issuer: Mapped[str] = mapped_column(String)
    method: Mapped[str] = mapped_column(String(16))
    form_token: Mapped[str] = mapped_column(String(64))
    """The sign-in form's CSRF token: shown to whoever holds the link, so no more secret than ``id``."""
    state_hash: Mapped[bytes | None] = mapped_column(LargeBinary(DIGEST_BYTES), unique=True)
    browser_hash: Mapped[bytes | None] = mapped_column(LargeBinary(DIGEST_BYTES))
    verifier: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[float] = mapped_column(Double)
    expires_at: Mapped[float] = mapped_column(Double, index=True)


class PageKeyRow(Base):
    """The key signing the login and consent pages' cookies and forms (``storage.pagekeys``), one row shared
    by every replica so a login started on one can be posted to another.

    ``key`` is a vault blob sealed for (owner = ``id``, purpose ``page-session-key``): a blob copied from
    another row does not open.
    """

    __tablename__ = "page_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[float] = mapped_column(Double)
