"""user identity keys: usernames and emails unique after NFKC and case folding

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 23:10:00

Existing users whose names (or addresses) become equal under the new rule are kept apart, not
merged: the oldest keeps the key, each later one gets a key marked with its id and is reported
here, for an operator to rename.
"""

import logging
import unicodedata
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("alembic.runtime.migration")


def _key(text: str) -> str:
    # Frozen copy of common.models.identity_key: a migration must not change with the code.
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        # Text: NFKC with case folding can make a name 18 times longer (U+FDFA); 0006 widens
        # the columns where an earlier version of this migration made them shorter.
        batch_op.add_column(sa.Column("username_key", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("email_key", sa.Text(), nullable=True))
    users = sa.table(
        "users",
        sa.column("id", sa.Integer),
        sa.column("username", sa.String),
        sa.column("email", sa.String),
        sa.column("username_key", sa.String),
        sa.column("email_key", sa.String),
    )
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(users.c.id, users.c.username, users.c.email).order_by(users.c.id)
    ).all()
    owners: dict[tuple[str, str], int] = {}
    for user_id, username, email in rows:
        keys = {}
        for field, value in (("username", username), ("email", email)):
            key = _key(value)
            first = owners.setdefault((field, key), user_id)
            if first != user_id:
                log.warning(
                    "user %s: %s %r is the same as user %s's under NFKC and case folding; "
                    "kept apart (key marked with its id): rename one of them",
                    user_id,
                    field,
                    value,
                    first,
                )
                key = f"{key}#dup-{user_id}"
            keys[f"{field}_key"] = key
        connection.execute(sa.update(users).where(users.c.id == user_id).values(**keys))
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.alter_column("username_key", existing_type=sa.Text(), nullable=False)
        batch_op.alter_column("email_key", existing_type=sa.Text(), nullable=False)
        batch_op.create_unique_constraint("uq_users_username_key", ["username_key"])
        batch_op.create_unique_constraint("uq_users_email_key", ["email_key"])


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_constraint("uq_users_email_key", type_="unique")
        batch_op.drop_constraint("uq_users_username_key", type_="unique")
        batch_op.drop_column("email_key")
        batch_op.drop_column("username_key")
