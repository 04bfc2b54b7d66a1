"""event settings: per-owner exclusion rules and the imports' exclusion counters

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Plain ALTER TABLE, not batch mode, on purpose: on SQLite a batch "move and copy" drops and
# recreates the table, and with foreign keys on, dropping `accounts` or `imports` would cascade
# into every table that refers to them. Constant server defaults keep ADD COLUMN native there,
# and DROP COLUMN is native from SQLite 3.35.


def upgrade() -> None:
    op.add_column(
        "accounts",
        sa.Column("exclude_bots", sa.Boolean(), server_default=sa.true(), nullable=False),
    )
    op.add_column(
        "accounts",
        sa.Column("excluded_user_agents", sa.Text(), server_default="[]", nullable=False),
    )
    op.add_column(
        "imports",
        sa.Column("excluded", sa.BigInteger(), server_default="0", nullable=False),
    )
    op.add_column(
        "imports",
        sa.Column("do_not_track", sa.BigInteger(), server_default="0", nullable=False),
    )


def downgrade() -> None:
    op.drop_column("imports", "do_not_track")
    op.drop_column("imports", "excluded")
    op.drop_column("accounts", "excluded_user_agents")
    op.drop_column("accounts", "exclude_bots")
