"""usage: running totals and daily counters of each account

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30 21:50:00

Kept as the work happens (``common.files.usage``). The totals start from the files there are;
daily counters start today.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _user_id() -> sa.Column:
    return sa.Column(
        "user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )


def upgrade() -> None:
    op.create_table(
        "usage_totals",
        _user_id(),
        sa.Column("status", sa.String(length=16), primary_key=True),
        sa.Column("files", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "usage_daily",
        _user_id(),
        sa.Column("day", sa.Date(), primary_key=True),
        *(
            sa.Column(name, sa.BigInteger(), nullable=False)
            for name in ("uploads", "upload_bytes", "downloads", "deletes", "rejected", "failed")
        ),
    )
    op.execute(
        "INSERT INTO usage_totals (user_id, status, files, bytes)"
        " SELECT owner_id, status, count(*), coalesce(sum(size), 0) FROM files"
        " WHERE owner_id IS NOT NULL AND status <> 'deleted' GROUP BY owner_id, status"
    )


def downgrade() -> None:
    op.drop_table("usage_daily")
    op.drop_table("usage_totals")
