"""Pinned tool definitions (``integrity.pins``): the rug-pull defence.

Revision ID: 0005_tool_pins
Revises: 0004_upstream_credentials
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_tool_pins"
down_revision = "0004_upstream_credentials"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tool_pins",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("server", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("pending_digest", sa.String(length=64), nullable=True),
        sa.Column("pending", sa.JSON(), nullable=True),
        sa.Column("first_seen", sa.Double(), nullable=False),
        sa.Column("changed_at", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tool_pins")),
    )
    op.create_index(op.f("ix_tool_pins_server"), "tool_pins", ["server"])


def downgrade() -> None:
    op.drop_index(op.f("ix_tool_pins_server"), table_name="tool_pins")
    op.drop_table("tool_pins")
