"""An organisation's login policy (a second factor required) and the sessions it
restricts until one is enrolled.

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-05 05:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0029"
down_revision = "0028"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("organizations") as table:
        table.add_column(
            sa.Column("require_mfa", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("auth_sessions") as table:
        table.add_column(
            sa.Column("restricted", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("auth_sessions") as table:
        table.drop_column("restricted")
    with op.batch_alter_table("organizations") as table:
        table.drop_column("require_mfa")
