"""Signing keys of the built-in authorization server, private halves sealed by the vault (``oauth.signingkeys``).

Revision ID: 0002_signing_keys
Revises: 0001_initial
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_signing_keys"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(length=128), nullable=False),
        sa.Column("alg", sa.String(length=16), nullable=False),
        sa.Column("public_jwk", sa.JSON(), nullable=False),
        sa.Column("private_jwk", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("retired_at", sa.Double(), nullable=True),
        sa.Column("expires_at", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("kid", name=op.f("pk_signing_keys")),
    )
    # Expired keys are purged (and their sealed private halves with them) by ``expires_at``.
    op.create_index(op.f("ix_signing_keys_expires_at"), "signing_keys", ["expires_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_signing_keys_expires_at"), table_name="signing_keys")
    op.drop_table("signing_keys")
