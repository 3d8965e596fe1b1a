"""people: users, invitations, project memberships, custom roles and their assignments,
groups and their members.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 02:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def _when(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _id(name: str) -> sa.Column:
    return sa.Column(name, sa.String(length=40), nullable=False)


def upgrade() -> None:
    op.create_table(
        "users",
        _id("id"),
        _id("org_id"),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("role", sa.String(length=16), nullable=False),
        _when("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("org_id", "email", name="uq_users_org_id_email"),
    )
    op.create_table(
        "invites",
        _id("id"),
        _id("org_id"),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("projects", sa.Text(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        _when("created_at"),
        _when("expires_at"),
        _when("accepted_at", nullable=True),
        sa.Column("user_id", sa.String(length=40), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invites")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_invites_token_hash")),
    )
    op.create_table(
        "project_users",
        _id("project_id"),
        _id("user_id"),
        _id("org_id"),
        sa.Column("role", sa.String(length=16), nullable=False),
        _when("created_at"),
        sa.PrimaryKeyConstraint("project_id", "user_id", name=op.f("pk_project_users")),
    )
    op.create_table(
        "roles",
        _id("id"),
        _id("org_id"),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("permissions", sa.Text(), nullable=False),
        sa.Column("resource_type", sa.String(length=32), nullable=False),
        _when("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_roles")),
        sa.UniqueConstraint("org_id", "name", name="uq_roles_org_id_name"),
    )
    op.create_table(
        "role_assignments",
        sa.Column("principal_type", sa.String(length=8), nullable=False),
        _id("principal_id"),
        _id("role_id"),
        _id("org_id"),
        _when("created_at"),
        sa.PrimaryKeyConstraint(
            "principal_type", "principal_id", "role_id", name=op.f("pk_role_assignments")
        ),
    )
    op.create_table(
        "groups",
        _id("id"),
        _id("org_id"),
        sa.Column("name", sa.String(length=200), nullable=False),
        _when("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_groups")),
        sa.UniqueConstraint("org_id", "name", name="uq_groups_org_id_name"),
    )
    op.create_table(
        "group_users",
        _id("group_id"),
        _id("user_id"),
        _id("org_id"),
        _when("created_at"),
        sa.PrimaryKeyConstraint("group_id", "user_id", name=op.f("pk_group_users")),
    )
    for table, column in (
        ("users", "org_id"),
        ("invites", "org_id"),
        ("project_users", "org_id"),
        ("roles", "org_id"),
        ("role_assignments", "org_id"),
        ("role_assignments", "role_id"),
        ("groups", "org_id"),
        ("group_users", "org_id"),
        ("group_users", "user_id"),
    ):
        op.create_index(op.f(f"ix_{table}_{column}"), table, [column])


def downgrade() -> None:
    for table in (
        "group_users",
        "groups",
        "role_assignments",
        "roles",
        "project_users",
        "invites",
        "users",
    ):
        op.drop_table(table)
