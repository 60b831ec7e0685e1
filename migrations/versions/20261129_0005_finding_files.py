"""finding files: search names, categories, tags, an index for each listing order

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 02:00:00

``search_name`` is the original name as searches compare it (NFKC with case folding), filled
here for existing files. PostgreSQL gets a trigram index on it (pg_trgm, a trusted extension
since PostgreSQL 13: the database's owner may create it), which serves ``LIKE '%word%'``.
"""

import unicodedata
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 5000


def _key(text: str) -> str:
    # Frozen copy of common.models.search_key: a migration must not change with the code.
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


def upgrade() -> None:
    with op.batch_alter_table("files", schema=None) as batch_op:
        # Text: NFKC with case folding can make a name 18 times longer (U+FDFA); 0006 widens
        # the column where an earlier version of this migration made it String(1024).
        batch_op.add_column(sa.Column("search_name", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("category", sa.String(length=64), nullable=True))
        batch_op.create_index("ix_files_owner_name", ["owner_id", "name"])
        batch_op.create_index(
            "ix_files_owner_original_name", ["owner_id", "original_name", "id"]
        )
        batch_op.create_index("ix_files_owner_size", ["owner_id", "size", "id"])
        batch_op.create_index("ix_files_owner_category", ["owner_id", "category"])
    files = sa.table(
        "files",
        sa.column("id", sa.Integer),
        sa.column("original_name", sa.String),
        sa.column("search_name", sa.String),
    )
    connection = op.get_bind()
    last = 0
    while True:
        rows = connection.execute(
            sa.select(files.c.id, files.c.original_name)
            .where(files.c.id > last)
            .order_by(files.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            break
        connection.execute(
            files.update().where(files.c.id == sa.bindparam("file_id")),
            [{"file_id": i, "search_name": _key(name)} for i, name in rows],
        )
        last = rows[-1][0]
    op.create_table(
        "tags",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(length=64), nullable=False, unique=True),
    )
    op.create_table(
        "file_tags",
        sa.Column(
            "file_id",
            sa.Integer(),
            sa.ForeignKey("files.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "tag_id", sa.Integer(), sa.ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True
        ),
        # The file's owner and upload time (immutable), so a tag's listing is an index range.
        sa.Column("owner_id", sa.Integer(), nullable=True),
        sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_file_tags_listing", "file_tags", ["tag_id", "owner_id", "uploaded_at", "file_id"]
    )
    if connection.dialect.name == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.execute(
            "CREATE INDEX ix_files_search_trgm ON files USING gin (search_name gin_trgm_ops)"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_files_search_trgm")
    op.drop_index("ix_file_tags_listing", table_name="file_tags")
    op.drop_table("file_tags")
    op.drop_table("tags")
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.drop_index("ix_files_owner_category")
        batch_op.drop_index("ix_files_owner_size")
        batch_op.drop_index("ix_files_owner_original_name")
        batch_op.drop_index("ix_files_owner_name")
        batch_op.drop_column("category")
        batch_op.drop_column("search_name")
