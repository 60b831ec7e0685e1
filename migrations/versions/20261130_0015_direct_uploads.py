"""direct uploads: files declared first and sent in parts, and the ledger of their parts

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-30 23:55:00

An upload reserves its declared bytes against its owner's quota when it is created; the
ledger (``upload_parts``) is what resume and complete trust.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "uploads",
        sa.Column("id", sa.String(length=32), primary_key=True),
        sa.Column(
            "owner_id",
            sa.Integer(),
            sa.ForeignKey("users.id", name="fk_uploads_owner_id_users", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("original_name", sa.String(length=255), nullable=False),
        sa.Column("extension", sa.String(length=16), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("part_size", sa.BigInteger(), nullable=False),
        sa.Column("part_count", sa.Integer(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=True),
        sa.Column(
            "state",
            sa.Enum("open", "completed", "aborted", name="uploadstate", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column(
            "file_id",
            sa.Integer(),
            sa.ForeignKey("files.id", name="fk_uploads_file_id_files", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("store_upload_id", sa.String(length=1024), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_uploads_owner_id", "uploads", ["owner_id"])
    op.create_index("ix_uploads_state_expires", "uploads", ["state", "expires_at"])
    op.create_table(
        "upload_parts",
        sa.Column(
            "upload_id",
            sa.String(length=32),
            sa.ForeignKey(
                "uploads.id", name="fk_upload_parts_upload_id_uploads", ondelete="CASCADE"
            ),
            primary_key=True,
        ),
        sa.Column("part_number", sa.Integer(), primary_key=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("etag", sa.String(length=128), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("upload_parts")
    op.drop_table("uploads")
