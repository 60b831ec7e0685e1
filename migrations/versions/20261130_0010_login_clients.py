"""login clients: the address each login came from

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 18:40:00

The per-account limit on log-ins does not apply to an address that has logged in to the
account before (api/limits.py), so guessing at an account from elsewhere cannot lock its owner
out. Each login session records the client it was opened from.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("auth_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("client", sa.String(length=64), nullable=True))
        batch_op.create_index("ix_auth_sessions_user_client", ["user_id", "client"])


def downgrade() -> None:
    with op.batch_alter_table("auth_sessions", schema=None) as batch_op:
        batch_op.drop_index("ix_auth_sessions_user_client")
        batch_op.drop_column("client")
