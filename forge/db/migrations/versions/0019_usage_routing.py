"""Usage records say how each request was routed, its A/B arm, and the caller's feedback.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-04 16:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(sa.Column("route", sa.String(300), nullable=True))
        batch.add_column(sa.Column("arm", sa.String(100), nullable=True))
        batch.add_column(sa.Column("feedback_score", sa.Float(), nullable=True))
        batch.create_index(op.f("ix_usage_records_arm"), ["arm"])


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_index(op.f("ix_usage_records_arm"))
        batch.drop_column("feedback_score")
        batch.drop_column("arm")
        batch.drop_column("route")
