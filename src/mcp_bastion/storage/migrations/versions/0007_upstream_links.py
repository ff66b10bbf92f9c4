"""Pending upstream account links in the database, so every replica sees them (``storage.linkstore``).

Revision ID: 0007_upstream_links
Revises: 0006_pin_kinds
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_upstream_links"
down_revision = "0006_pin_kinds"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "upstream_links",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("upstream", sa.String(length=128), nullable=False),
        sa.Column("principal", sa.String(), nullable=False),
        sa.Column("subject", sa.String(), nullable=False),
        sa.Column("issuer", sa.String(), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("form_token", sa.String(length=64), nullable=False),
        sa.Column("state_hash", sa.LargeBinary(length=32), nullable=True),
        sa.Column("browser_hash", sa.LargeBinary(length=32), nullable=True),
        sa.Column("verifier", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_upstream_links")),
        sa.UniqueConstraint("state_hash", name=op.f("uq_upstream_links_state_hash")),
    )
    op.create_index(op.f("ix_upstream_links_principal"), "upstream_links", ["principal"])
    op.create_index(op.f("ix_upstream_links_expires_at"), "upstream_links", ["expires_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_upstream_links_expires_at"), table_name="upstream_links")
    op.drop_index(op.f("ix_upstream_links_principal"), table_name="upstream_links")
    op.drop_table("upstream_links")
