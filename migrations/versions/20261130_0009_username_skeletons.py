"""username skeletons: what each account's name looks like (Unicode TS #39)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 18:30:00

A new username whose confusable skeleton matches an existing account's is refused
(``common.accounts.usernames``). Existing accounts get theirs here; look-alikes that already exist stay
(both keep working), only new ones are refused.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    from common.accounts.usernames import skeleton

    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("username_skeleton", sa.Text(), nullable=True))
        batch_op.create_index("ix_users_username_skeleton", ["username_skeleton"])
    users = sa.table(
        "users",
        sa.column("id", sa.Integer),
        sa.column("username", sa.String),
        sa.column("username_skeleton", sa.Text),
    )
    connection = op.get_bind()
    rows = connection.execute(sa.select(users.c.id, users.c.username)).all()
    if rows:
        connection.execute(
            users.update().where(users.c.id == sa.bindparam("user_id")),
            [{"user_id": i, "username_skeleton": skeleton(name)} for i, name in rows],
        )


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_index("ix_users_username_skeleton")
        batch_op.drop_column("username_skeleton")
