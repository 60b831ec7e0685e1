"""open v1's users: names and addresses of their own, apart from accounts

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 18:20:00

With ``V1_ACCESS=open``, anyone may call ``GET /users`` and ``POST /users``: they listed every
account's name and address, and let anyone take a name a later registration found taken. Open
v1's users are now rows of ``open_users``, unique among themselves, never accounts. Existing
rows of ``users`` stay accounts.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "open_users",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("username_key", sa.Text(), nullable=False, unique=True),
        sa.Column("email_key", sa.Text(), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("open_users")
