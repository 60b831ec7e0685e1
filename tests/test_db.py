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
