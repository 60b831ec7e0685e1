"""wide keys: the search name and identity keys hold any normalised name

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 17:00:00

Unicode NFKC with case folding can make a name up to 18 times longer (U+FDFA is 18 characters
once normalised), so a 64-character username or a 255-character file name could overflow
``username_key`` (256) or ``search_name`` (1024) on PostgreSQL. They become ``text``. SQLite
does not enforce lengths: nothing to do there.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WIDENED = (("users", "username_key"), ("users", "email_key"), ("files", "search_name"))


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column in WIDENED:
        op.alter_column(table, column, type_=sa.Text())


def downgrade() -> None:
    """The wider columns stay: the keys written since may not fit the old lengths, and the
    earlier revisions now create these columns as ``text`` too."""
