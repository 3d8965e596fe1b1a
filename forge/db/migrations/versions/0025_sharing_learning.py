"""Fine-tuned models shared (organisation, gallery), rated and installed; learning from
use: the policies and the examples they collect.

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-05 04:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    when = sa.DateTime(timezone=True)
    with op.batch_alter_table("model_versions") as table:
        table.add_column(
            sa.Column("sharing", sa.String(16), nullable=False, server_default="project")
        )
        table.add_column(sa.Column("description", sa.Text(), nullable=True))
        table.add_column(sa.Column("published_at", when, nullable=True))
    op.create_table(
        "gallery_ratings",
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("created_at", when, nullable=False),
        sa.PrimaryKeyConstraint("model", "org_id", name=op.f("pk_gallery_ratings")),
    )
    op.create_table(
        "gallery_installs",
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("project_id", sa.String(40), nullable=False),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("alias", sa.String(200), nullable=False),
        sa.Column("location", sa.String(1000), nullable=False),
        sa.Column("created_at", when, nullable=False),
        sa.PrimaryKeyConstraint("model", "project_id", name=op.f("pk_gallery_installs")),
    )
    op.create_table(
        "learning_policies",
        sa.Column("project_id", sa.String(40), nullable=False),
        sa.Column("suffix", sa.String(64), nullable=False),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("base_model", sa.String(200), nullable=False),
        sa.Column("alias", sa.String(200), nullable=False),
        sa.Column("current", sa.String(200), nullable=False),
        sa.Column("validation_file", sa.String(40), nullable=False),
        sa.Column("retrain_every", sa.Integer(), nullable=False),
        sa.Column("min_score", sa.Float(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("candidate_job", sa.String(40), nullable=True),
        sa.Column("created_at", when, nullable=False),
        sa.PrimaryKeyConstraint("project_id", "suffix", name=op.f("pk_learning_policies")),
    )
    op.create_index("ix_learning_policies_alias", "learning_policies", ["alias"])
    op.create_table(
        "learning_examples",
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("project_id", sa.String(40), nullable=False),
        sa.Column("suffix", sa.String(64), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("messages", sa.Text(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("correction", sa.Text(), nullable=True),
        sa.Column("job_id", sa.String(40), nullable=True),
        sa.Column("created_at", when, nullable=False),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_learning_examples")),
    )
    op.create_index(
        "ix_learning_examples_lineage", "learning_examples", ["project_id", "suffix", "job_id"]
    )


def downgrade() -> None:
    op.drop_table("learning_examples")
    op.drop_table("learning_policies")
    op.drop_table("gallery_installs")
    op.drop_table("gallery_ratings")
    with op.batch_alter_table("model_versions") as table:
        table.drop_column("published_at")
        table.drop_column("description")
        table.drop_column("sharing")
