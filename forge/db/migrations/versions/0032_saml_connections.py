"""SAML connections: the identity provider's metadata (its entity ID, sign-on URL and
signing certificate) kept with the connection; and every sign-in under way bound to the
browser that started it (the SHA-256 of a cookie set at the start).

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
    with op.batch_alter_table("sso_states") as batch:
        batch.add_column(
            sa.Column("browser_hash", sa.String(64), nullable=False, server_default="")
        )


def downgrade() -> None:
    with op.batch_alter_table("sso_states") as batch:
        batch.drop_column("browser_hash")
    with op.batch_alter_table("sso_connections") as batch:
        batch.drop_column("idp_metadata")
