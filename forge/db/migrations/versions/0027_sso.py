"""Single sign-on: organisations' OpenID Connect connections and sign-ins under way.

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-05 05:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None


def upgrade() -> None:
    when = sa.DateTime(timezone=True)
    op.create_table(
        "sso_connections",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("issuer", sa.String(500), nullable=False),
        sa.Column("client_id", sa.String(300), nullable=False),
        sa.Column("client_secret", sa.Text(), nullable=False),
        sa.Column("email_domains", sa.Text(), nullable=False),
        sa.Column("group_roles", sa.Text(), nullable=False),
        sa.Column("default_role", sa.String(16), nullable=False),
        sa.Column("enforced", sa.Boolean(), nullable=False),
        sa.Column("break_glass_email", sa.String(320), nullable=True),
        sa.Column("created_at", when, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sso_connections")),
    )
    op.create_index("ix_sso_connections_org_id", "sso_connections", ["org_id"])
    op.create_table(
        "sso_states",
        sa.Column("state_hash", sa.String(64), nullable=False),
        sa.Column("connection_id", sa.String(40), nullable=False),
        sa.Column("nonce", sa.String(100), nullable=False),
        sa.Column("verifier", sa.Text(), nullable=False),
        sa.Column("return_to", sa.String(2000), nullable=False),
        sa.Column("created_at", when, nullable=False),
        sa.Column("expires_at", when, nullable=False),
        sa.Column("used_at", when, nullable=True),
        sa.PrimaryKeyConstraint("state_hash", name=op.f("pk_sso_states")),
    )


def downgrade() -> None:
    op.drop_table("sso_states")
    op.drop_table("sso_connections")
