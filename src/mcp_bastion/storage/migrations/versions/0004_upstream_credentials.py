"""Per-user upstream credentials, sealed by the vault (``delegation.store``).

Revision ID: 0004_upstream_credentials
Revises: 0003_family_identity
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_upstream_credentials"
down_revision = "0003_family_identity"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "upstream_credentials",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("upstream", sa.String(length=128), nullable=False),
        sa.Column("principal", sa.String(), nullable=False),
        sa.Column("secret", sa.LargeBinary(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_upstream_credentials")),
    )
    op.create_index(op.f("ix_upstream_credentials_upstream"), "upstream_credentials", ["upstream"])


def downgrade() -> None:
    op.drop_index(op.f("ix_upstream_credentials_upstream"), table_name="upstream_credentials")
    op.drop_table("upstream_credentials")
