"""file claims: who works on a processing file, and until when (the lease)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 23:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Files already ``processing`` get no lease: the reconciler treats that as lapsed and
    # hands them to a worker again.
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claim", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.drop_column("lease_until")
        batch_op.drop_column("claim")
