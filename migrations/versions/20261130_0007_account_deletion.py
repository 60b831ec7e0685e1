"""account deletion: accounts are marked deleted, and a user with files cannot be removed

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 18:10:00

``files.owner_id`` was ``ON DELETE SET NULL``: removing a user's row made its files ownerless,
which is open v1's namespace (anyone could list and download them). Now the foreign key
refuses (``RESTRICT``), and an account is deleted through the service (its files through the
pipeline, its logins and keys revoked), its row kept as a tombstone: ``deleted_at``.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
    _owner_key("RESTRICT")


def downgrade() -> None:
    _owner_key("SET NULL")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("deleted_at")


def _owner_key(ondelete: str) -> None:
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.drop_constraint("fk_files_owner_id_users", type_="foreignkey")
        batch_op.create_foreign_key(
            "fk_files_owner_id_users", "users", ["owner_id"], ["id"], ondelete=ondelete
        )
