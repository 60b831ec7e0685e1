"""Database sessions: reads outside a transaction on PostgreSQL, writes always inside one."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select, text

from api.services import services
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


def test_connections_the_server_closed_are_replaced_unseen(pg, pg_database_url):
    """The server ends pooled connections (a restart, an administrator, an idle timeout: each
    says why, then closes): the next sessions get new ones and never see an error."""
    import psycopg

    held = []
    with pg.session() as first, pg.reading() as second:  # two connections in the pool
        for session in (first, second):
            held.append(session.scalar(text("SELECT pg_backend_pid()")))
    with psycopg.connect(pg_database_url.replace("+psycopg", ""), autocommit=True) as admin:
        for pid in held:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    time.sleep(0.2)  # the server's goodbye reaches the sockets
    with pg.session() as first, pg.reading() as second:
        now = [session.scalar(text("SELECT pg_backend_pid()")) for session in (first, second)]
    assert not set(now) & set(held)


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
    from sqlalchemy import text

    from common.db import Database
    from tests.conftest import migrate

    url = f"sqlite:///{tmp_path / 'old.db'}"
    db = Database(url)
    migrate(url, "0002")
    with db.engine.begin() as connection:
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
    with caplog.at_level("WARNING"):
        migrate(url)
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


def test_libpq_options_in_the_url_are_kept_beside_the_timeout(tmp_path):
    """``?options=-c search_path=app`` and ``connect_timeout`` in DATABASE_URL stay what the
    URL says: the migrations and the API both use schema ``app``, and a registration works."""
    import uuid

    import psycopg

    from tests.conftest import PG_URL, migrate, settings_for

    name = f"opt_{uuid.uuid4().hex[:8]}"
    admin = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_URL.rsplit("/", 1)[0] + "/" + name
    try:
        with psycopg.connect(base.replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute("CREATE SCHEMA app")
        url = base + "?options=-c%20search_path%3Dapp&connect_timeout=7"
        migrate(url)
        db = Database(url, timeout=2)
        with db.engine.connect() as connection:
            assert connection.exec_driver_sql("SHOW search_path").scalar() == "app"
            assert connection.exec_driver_sql("SHOW statement_timeout").scalar() == "2s"
            assert (
                connection.connection.dbapi_connection.info.get_parameters()["connect_timeout"]
                == "7"
            )
        db.dispose()
        from api import create_app

        app = create_app(settings_for(tmp_path, database_url=url))
        reply = app.test_client().post(
            "/api/v2/users",
            json={"username": "alice", "email": "a@example.com", "password": "long enough"},
        )
        services(app).pipeline.close()
        assert reply.status_code == 201, reply.json
        with psycopg.connect(base.replace("+psycopg", "")) as conn:
            assert conn.execute("SELECT username FROM app.users").fetchall() == [("alice",)]
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
