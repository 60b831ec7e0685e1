"""quotas: each account's used bytes and its own quota

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30 22:00:00

``used_bytes`` (pending, processing and stored files) is what an upload is admitted against,
with one conditional UPDATE; it starts from the files there are.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("used_bytes", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("quota_mb", sa.Integer(), nullable=True))
    op.execute(
        "UPDATE users SET used_bytes = (SELECT coalesce(sum(size), 0) FROM files"
        " WHERE files.owner_id = users.id"
        " AND files.status IN ('pending', 'processing', 'stored'))"
    )


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("quota_mb")
        batch_op.drop_column("used_bytes")
