"""Personal values of audit entries kept beside the chain (the chain holds their salted
digests), so that a person can be erased without breaking it.

Revision ID: 0031
Revises: 0030
Create Date: 2026-12-05 05:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0031"
down_revision = "0030"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_personal",
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("entry_id", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("salt", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_audit_personal")),
    )
    op.create_index("ix_audit_personal_entry_id", "audit_personal", ["entry_id"])


def downgrade() -> None:
    op.drop_table("audit_personal")
