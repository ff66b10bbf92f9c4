"""Pins for prompts, resources and resource templates besides tools; why an item is quarantined.

Rows keep their table (``tool_pins``, now holding every kind); ids gain the kind in front
(``tool\\x1f<server>\\x1f<name>``), so a prompt and a tool of the same name are different pins.

Revision ID: 0006_pin_kinds
Revises: 0005_tool_pins
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_pin_kinds"
down_revision = "0005_tool_pins"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tool_pins") as batch:
        batch.add_column(sa.Column("kind", sa.String(length=16), nullable=False, server_default="tool"))
        batch.add_column(sa.Column("reason", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("findings", sa.JSON(), nullable=True))
    # ``||`` concatenates in both SQLite and PostgreSQL; the separator is bound, not spelled per dialect.
    op.execute(sa.text("UPDATE tool_pins SET id = 'tool' || :sep || id").bindparams(sep="\x1f"))
    op.execute(sa.text("UPDATE tool_pins SET reason = 'changed' WHERE state = 'quarantined'"))


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM tool_pins WHERE kind <> 'tool'"))
    op.execute(sa.text("UPDATE tool_pins SET id = substr(id, 6)"))
    with op.batch_alter_table("tool_pins") as batch:
        batch.drop_column("findings")
        batch.drop_column("reason")
        batch.drop_column("kind")
