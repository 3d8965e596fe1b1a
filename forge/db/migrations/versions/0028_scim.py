"""SCIM provisioning: per-organisation tokens; users' and groups' provisioning fields
(external id, names, active).

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-05 05:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None


def upgrade() -> None:
    when = sa.DateTime(timezone=True)
    op.create_table(
        "scim_tokens",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", when, nullable=False),
        sa.Column("last_used_at", when, nullable=True),
        sa.Column("revoked_at", when, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scim_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_scim_tokens_token_hash")),
    )
    op.create_index("ix_scim_tokens_org_id", "scim_tokens", ["org_id"])
    with op.batch_alter_table("users") as table:
        table.add_column(sa.Column("external_id", sa.String(200), nullable=True))
        table.add_column(sa.Column("given_name", sa.String(200), nullable=True))
        table.add_column(sa.Column("family_name", sa.String(200), nullable=True))
        table.add_column(
            sa.Column("active", sa.Boolean(), nullable=False, server_default=sa.true())
        )
        table.add_column(sa.Column("updated_at", when, nullable=True))
    with op.batch_alter_table("groups") as table:
        table.add_column(sa.Column("external_id", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("groups") as table:
        table.drop_column("external_id")
    with op.batch_alter_table("users") as table:
        for column in ("updated_at", "active", "family_name", "given_name", "external_id"):
            table.drop_column(column)
    op.drop_table("scim_tokens")
