"""The login pages' signing key in the database, so every replica signs and checks with it (``storage.pagekeys``).

Revision ID: 0008_page_keys
Revises: 0007_upstream_links
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_page_keys"
down_revision = "0007_upstream_links"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "page_keys",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("key", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_page_keys")),
    )


def downgrade() -> None:
    op.drop_table("page_keys")
