"""Token families remember the user's name and roles at login: access tokens carry them for policies.

Revision ID: 0003_family_identity
Revises: 0002_signing_keys
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_family_identity"
down_revision = "0002_signing_keys"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("oauth_token_families") as batch:
        batch.add_column(sa.Column("username", sa.String(), nullable=False, server_default=""))
        batch.add_column(sa.Column("roles", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("oauth_token_families") as batch:
        batch.drop_column("roles")
        batch.drop_column("username")
