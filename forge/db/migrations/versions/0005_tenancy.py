"""tenancy: organisations, projects and service accounts; every key, usage record and
stored response belongs to an organisation and a project. What existed before lands in
the default organisation's default project and keeps working; the master key becomes
the platform operator's.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 20:20:00
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

DEFAULT_ORG = "org-default"
DEFAULT_PROJECT = "proj_default"


def upgrade() -> None:
    now = datetime.now(UTC)
    organizations = op.create_table(
        "organizations",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("plan", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("default_project_id", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organizations")),
        sa.UniqueConstraint("name", name=op.f("uq_organizations_name")),
    )
    projects = op.create_table(
        "projects",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_projects")),
        sa.UniqueConstraint("org_id", "name", name="uq_projects_org_id_name"),
    )
    op.create_index(op.f("ix_projects_org_id"), "projects", ["org_id"], unique=False)
    op.create_table(
        "service_accounts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("project_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_service_accounts")),
    )
    op.create_index(
        op.f("ix_service_accounts_project_id"), "service_accounts", ["project_id"], unique=False
    )
    op.bulk_insert(
        organizations,
        [
            {
                "id": DEFAULT_ORG,
                "name": "Default organization",
                "plan": "enterprise",
                "status": "active",
                "created_at": now,
                "default_project_id": DEFAULT_PROJECT,
            }
        ],
    )
    op.bulk_insert(
        projects,
        [
            {
                "id": DEFAULT_PROJECT,
                "org_id": DEFAULT_ORG,
                "name": "Default project",
                "status": "active",
                "created_at": now,
                "archived_at": None,
            }
        ],
    )

    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("org_id", sa.String(length=40), nullable=False, server_default=DEFAULT_ORG)
        )
        batch_op.add_column(
            sa.Column(
                "project_id",
                sa.String(length=40),
                nullable=False,
                server_default=DEFAULT_PROJECT,
            )
        )
        batch_op.add_column(sa.Column("owner_type", sa.String(length=24), nullable=True))
        batch_op.add_column(sa.Column("owner_id", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f("ix_api_keys_org_id"), ["org_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_api_keys_project_id"), ["project_id"], unique=False)
    op.execute("UPDATE api_keys SET role = 'platform' WHERE name = 'master' AND role = 'admin'")

    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.add_column(sa.Column("org_id", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("project_id", sa.String(length=40), nullable=True))
        batch_op.create_index("ix_usage_records_org_created", ["org_id", "created_at"])
    op.execute(
        f"UPDATE usage_records SET org_id = '{DEFAULT_ORG}', project_id = '{DEFAULT_PROJECT}' "
        "WHERE key_id IS NOT NULL"
    )

    with op.batch_alter_table("responses", schema=None) as batch_op:
        batch_op.drop_index("ix_responses_key_created")
        batch_op.alter_column(
            "key_id",
            new_column_name="project_id",
            existing_type=sa.String(length=32),
            type_=sa.String(length=40),
            existing_nullable=False,
        )
    op.execute(f"UPDATE responses SET project_id = '{DEFAULT_PROJECT}'")
    with op.batch_alter_table("responses", schema=None) as batch_op:
        batch_op.create_index("ix_responses_project_created", ["project_id", "created_at"])


def downgrade() -> None:
    with op.batch_alter_table("responses", schema=None) as batch_op:
        batch_op.drop_index("ix_responses_project_created")
        batch_op.alter_column(
            "project_id",
            new_column_name="key_id",
            existing_type=sa.String(length=40),
            type_=sa.String(length=32),
            existing_nullable=False,
        )
    with op.batch_alter_table("responses", schema=None) as batch_op:
        batch_op.create_index("ix_responses_key_created", ["key_id", "created_at"])
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.drop_index("ix_usage_records_org_created")
        batch_op.drop_column("project_id")
        batch_op.drop_column("org_id")
    op.execute("UPDATE api_keys SET role = 'admin' WHERE role = 'platform'")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_keys_project_id"))
        batch_op.drop_index(batch_op.f("ix_api_keys_org_id"))
        batch_op.drop_column("expires_at")
        batch_op.drop_column("owner_id")
        batch_op.drop_column("owner_type")
        batch_op.drop_column("project_id")
        batch_op.drop_column("org_id")
    op.drop_index(op.f("ix_service_accounts_project_id"), table_name="service_accounts")
    op.drop_table("service_accounts")
    op.drop_index(op.f("ix_projects_org_id"), table_name="projects")
    op.drop_table("projects")
    op.drop_table("organizations")
