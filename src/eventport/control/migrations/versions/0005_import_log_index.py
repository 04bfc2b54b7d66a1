"""import logs: an index by level, for the first errors and warnings of an import

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 18:00:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("import_logs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_import_logs_import_id_level_line_code",
            ["import_id", "level", "line", "code"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("import_logs", schema=None) as batch_op:
        batch_op.drop_index("ix_import_logs_import_id_level_line_code")
