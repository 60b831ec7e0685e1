"""direct uploads: found by their file (a worker asks whether a file came as a direct upload)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01 02:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_uploads_file_id", "uploads", ["file_id"])


def downgrade() -> None:
    op.drop_index("ix_uploads_file_id", table_name="uploads")
