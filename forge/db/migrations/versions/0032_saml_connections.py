"""SAML connections: the identity provider's metadata (its entity ID, sign-on URL and
signing certificate) kept with the connection.

Revision ID: 0032
Revises: 0031
Create Date: 2026-12-05 07:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0032"
down_revision = "0031"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sso_connections") as batch:
        batch.add_column(sa.Column("idp_metadata", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sso_connections") as batch:
        batch.drop_column("idp_metadata")
