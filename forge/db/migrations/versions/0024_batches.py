"""Batches: the batches and their lines (where each is in the input file, its fate).

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-05 01:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    when = sa.DateTime(timezone=True)
    op.create_table(
        "batches",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("project_id", sa.String(40), nullable=False),
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("endpoint", sa.String(40), nullable=False),
        sa.Column("input_file_id", sa.String(40), nullable=False),
        sa.Column("completion_window", sa.String(8), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("metadata", sa.Text(), nullable=True),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("output_file_id", sa.String(40), nullable=True),
        sa.Column("error_file_id", sa.String(40), nullable=True),
        sa.Column("errors", sa.Text(), nullable=True),
        sa.Column("paused_until", when, nullable=True),
        sa.Column("pause_reason", sa.String(300), nullable=True),
        sa.Column("created_at", when, nullable=False),
        sa.Column("in_progress_at", when, nullable=True),
        sa.Column("expires_at", when, nullable=False),
        sa.Column("finalizing_at", when, nullable=True),
        sa.Column("completed_at", when, nullable=True),
        sa.Column("failed_at", when, nullable=True),
        sa.Column("expired_at", when, nullable=True),
        sa.Column("cancelling_at", when, nullable=True),
        sa.Column("cancelled_at", when, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batches")),
    )
    op.create_index("ix_batches_status", "batches", ["status"])
    op.create_index("ix_batches_project_created", "batches", ["project_id", "created_at"])
    op.create_table(
        "batch_lines",
        sa.Column("batch_id", sa.String(40), nullable=False),
        sa.Column("line", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("length", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("claimed_by", sa.String(40), nullable=True),
        sa.Column("claimed_until", when, nullable=True),
        sa.Column("result", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("batch_id", "line", name=op.f("pk_batch_lines")),
    )
    op.create_index(
        "ix_batch_lines_batch_status_line", "batch_lines", ["batch_id", "status", "line"]
    )


def downgrade() -> None:
    op.drop_table("batch_lines")
    op.drop_table("batches")
