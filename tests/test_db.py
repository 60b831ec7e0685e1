"""Database sessions: reads outside a transaction on PostgreSQL, writes always inside one."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select, text

from common.db import Database
from common.models import User


def _clock_moves_within(session) -> bool:
    """Inside a transaction now() is the transaction's start: it stands still."""
    first = session.scalar(select(func.now()))
    time.sleep(0.01)
    return session.scalar(select(func.now())) != first


@pytest.fixture
def pg(pg_database_url):
    db = Database(pg_database_url)
    yield db
    db.dispose()


def test_postgres_reads_run_outside_a_transaction(pg):
    with pg.reading() as session:
        assert _clock_moves_within(session)


def test_a_write_session_after_reads_is_still_one_transaction(pg):
    # Reads and writes share the pool: a connection used for a read must come back to a
    # writer with its transaction behaviour restored.
    for _ in range(8):
        with pg.reading() as session:
            session.execute(text("SELECT 1"))
    with pg.session() as session:
        assert not _clock_moves_within(session)

    with pytest.raises(RuntimeError), pg.session() as session:
        session.add(User(username="rolled-back", email="rolled-back@example.com"))
        session.flush()
        raise RuntimeError("after the insert")
    with pg.reading() as session:
        assert session.scalar(select(User).where(User.username == "rolled-back")) is None


def test_sqlite_reads_see_committed_writes(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        from common.models import Base

        Base.metadata.create_all(db.engine)
        with db.session() as session:
            session.add(User(username="kept", email="kept@example.com"))
        with db.reading() as session:
            assert session.scalar(select(User.username)) == "kept"
    finally:
        db.dispose()


def test_users_that_collide_under_the_new_rule_are_kept_apart_and_reported(tmp_path, caplog):
    """Migration 0003 on a database whose users differ only by case or width."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    from common.db import Database
    from tests.conftest import ROOT

    db = Database(f"sqlite:///{tmp_path / 'old.db'}")
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["configure_logger"] = False
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0002")
        for username, email in [
            ("admin", "admin@example.com"),
            ("Admin", "other@example.com"),
            ("ａｄｍｉｎ", "ADMIN@example.com"),
        ]:
            connection.execute(
                text(
                    "INSERT INTO users (username, email, created_at)"
                    " VALUES (:u, :e, '2026-01-01 00:00:00')"
                ),
                {"u": username, "e": email},
            )
    with caplog.at_level("WARNING"), db.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    with db.engine.connect() as connection:
        rows = connection.execute(
            text("SELECT id, username, username_key, email_key FROM users ORDER BY id")
        ).all()
    db.dispose()
    assert [(r.username, r.username_key) for r in rows] == [
        ("admin", "admin"),
        ("Admin", f"admin#dup-{rows[1].id}"),
        ("ａｄｍｉｎ", f"admin#dup-{rows[2].id}"),
    ]
    assert rows[2].email_key == f"admin@example.com#dup-{rows[2].id}"
    reported = [r.getMessage() for r in caplog.records if "kept apart" in r.getMessage()]
    assert len(reported) == 3  # two usernames and one address
