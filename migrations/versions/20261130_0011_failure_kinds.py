"""failure kinds: why a failed file failed, as data

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 20:10:00

The reconciler puts files that failed because the store was down back in the pipeline once it
answers again. It found them by the start of their message; the kind of failure is now a column
of its own (``common.models.Failure``), filled here from the messages of existing failures.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The messages each kind was written with before this revision (common.models.Failure).
MESSAGES = {
    "outage": "Хранилище недоступно: %",
    "refused": "Хранилище отказало: %",
    "damaged": "Промежуточная копия файла повреждена",
    "lost": "Промежуточная копия файла утеряна",
    "exhausted": "Файл не обработан после % попыток",
}


def upgrade() -> None:
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.add_column(sa.Column("failure", sa.String(length=16), nullable=True))
    files = sa.table(
        "files", sa.column("status", sa.String), sa.column("error"), sa.column("failure")
    )
    for kind, message in MESSAGES.items():
        op.execute(
            files.update()
            .where(files.c.status == "failed", files.c.error.like(message))
            .values(failure=kind)
        )


def downgrade() -> None:
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.drop_column("failure")
