"""imports: the attempt that last committed a batch, so that only attempts in a row that
commit nothing make an import fail

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# Plain ALTER TABLE with a constant server default, as in 0003 (no batch rebuild of imports).


def upgrade() -> None:
    op.add_column(
        "imports",
        sa.Column("progress_attempt", sa.Integer(), server_default="0", nullable=False),
    )


def downgrade() -> None:
    op.drop_column("imports", "progress_attempt")
