"""Deleting an account (docs/API.md, "Deleting an account"): the one way a user goes.

Its live files are deleted through the pipeline (rows marked, objects removed by the workers,
as a bulk delete does), its logins and API keys end at once (the same revocation as logout),
and its row stays as a tombstone: ``deleted_at`` set, name and address erased (so both are free
again), the deleted files still naming it. Files never become ownerless: the foreign key
refuses to remove a user who has any.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import current_app
from sqlalchemy import select, update

from api.auth import keys, sessions
from common.models import File, FileStatus, User


def delete_account(user_id: int) -> dict[str, Any] | None:
    """Delete the account ``user_id``: what was ended, or None when there is no such account.
    Running it again on a deleted account finishes what a failure may have left (its files)."""
    pipeline = current_app.extensions["pipeline"]
    with pipeline.db.session() as session:
        if session.get(User, user_id) is None:
            return None
        session.execute(
            update(User)
            .where(User.id == user_id, User.deleted_at.is_(None))
            .values(
                deleted_at=datetime.now(UTC),
                is_admin=False,
                password_hash=None,
                username=f"#deleted-{user_id}",
                email=f"deleted-{user_id}@invalid",
                username_key=f"#deleted-{user_id}",
                username_skeleton=None,
                email_key=f"#deleted-{user_id}",
            )
        )
    report = {
        "sessions_revoked": sessions.revoke_all(user_id),
        "keys_revoked": keys.revoke_all(user_id),
        "files_deleted": 0,
    }
    while True:
        with pipeline.db.reading() as session:
            live = list(
                session.scalars(
                    select(File.id)
                    .where(File.owner_id == user_id, File.status != FileStatus.DELETED)
                    .limit(BATCH)
                )
            )
        if not live:
            return report
        report["files_deleted"] += len(pipeline.delete_many(live))


#: Files deleted in one transaction (as a bulk delete's most).
BATCH = 1000
