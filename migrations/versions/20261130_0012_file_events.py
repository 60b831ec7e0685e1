"""file events: every change of a file, for its owner's live status

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 21:15:00

Each change of a file (a status, metadata, a new name, labels) is a row written in the same
transaction as the change (``common.files.states``); the realtime process reads them by id.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "file_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column(
            "file_id",
            sa.Integer(),
            sa.ForeignKey("files.id", name="fk_file_events_file_id_files", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("owner_id", sa.Integer(), nullable=True),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        # SQLite: AUTOINCREMENT, so that an id is never handed out twice, also once every row
        # was pruned (without it, SQLite starts again from the highest id left).
        sqlite_autoincrement=True,
    )
    op.create_index("ix_file_events_file_id", "file_events", ["file_id"])
    op.create_index("ix_file_events_owner_id", "file_events", ["owner_id", "id"])
    op.create_index("ix_file_events_at", "file_events", ["at"])


def downgrade() -> None:
    op.drop_table("file_events")
