"""Every migration, on SQLite and PostgreSQL, run over a database holding what production
holds: a pending file with its outbox entry, a processing file under a claim, a stored file,
users whose names collide or grow under Unicode normalisation, names of 255 characters that
grow 18-fold, tags. Each migration is run up, down and up again; no row and no outbox entry may
be lost on the way.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, select, text

from common.db import Database
from common.models import identity_key
from tests.conftest import PG_URL, ROOT, migrate

#: U+FDFA: one character, 18 once NFKC-normalised.
LONGEST = "\ufdfa"
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)

REVISIONS = [
    script.revision
    for script in reversed(
        list(ScriptDirectory.from_config(Config(str(ROOT / "alembic.ini"))).walk_revisions())
    )
]

USERS = [
    {"id": 1, "username": "alice", "email": "alice@example.com"},
    {"id": 2, "username": LONGEST * 64, "email": "long@example.com"},
    {"id": 3, "username": "ALICE", "email": "ALICE@example.com"},  # before 0003: a collision
]
FILES = [
    {"id": 1, "name": "20261130_120000_aaaaaaaaaaaaaaaa.txt", "status": "pending"},
    {"id": 2, "name": "20261130_120000_bbbbbbbbbbbbbbbb.txt", "status": "processing"},
    {"id": 3, "name": "20261130_120000_cccccccccccccccc.pdf", "status": "stored"},
]
OUTBOX = [(1, 1, "ingest"), (2, 2, "ingest"), (3, 3, "metadata")]


def _file_row(file: dict) -> dict:
    processing = file["status"] == "processing"
    return file | {
        "original_name": LONGEST * 251 + ".txt" if file["id"] == 1 else f"Отчёт {file['id']}.txt",
        "extension": file["name"].rsplit(".", 1)[1],
        "size": 10,
        "content_type": "text/plain",
        "sha256": "0" * 64,
        "metadata": {},
        "attempts": 1 if processing else 0,
        "uploaded_at": NOW,
        "updated_at": NOW,
        "owner_id": 1,
        "claim": "host:123:abcdef" if processing else None,
        "lease_until": NOW + timedelta(seconds=60) if processing else None,
    }


def fill(database_url: str) -> None:
    """Rows of every table the schema has, with whatever columns it has."""
    db = Database(database_url)
    metadata = MetaData()
    with db.engine.begin() as connection:
        metadata.reflect(connection)
        tables = metadata.tables
        has_keys = "username_key" in tables["users"].c
        users = [
            u | {"created_at": NOW, "username_key": identity_key(u["username"])}
            for u in USERS
            if not (has_keys and u["username"] == "ALICE")
        ]
        for user in users:
            user["email_key"] = identity_key(user["email"])
        _insert(connection, tables["users"], users)
        _insert(connection, tables["files"], [_file_row(f) for f in FILES])
        _insert(
            connection,
            tables["outbox"],
            [
                {"id": i, "file_id": f, "kind": k, "created_at": NOW, "publish_count": 1}
                for i, f, k in OUTBOX
            ],
        )
        if "tags" in tables:
            _insert(connection, tables["tags"], [{"id": 1, "name": "отчёт"}])
            _insert(
                connection,
                tables["file_tags"],
                [{"file_id": 1, "tag_id": 1, "owner_id": 1, "uploaded_at": NOW}],
            )
    db.dispose()


def _insert(connection, table, rows: list[dict]) -> None:
    connection.execute(table.insert(), [{k: v for k, v in r.items() if k in table.c} for r in rows])


def contents(database_url: str) -> dict:
    """What must survive every migration: users, files with their status, outbox entries."""
    db = Database(database_url)
    metadata = MetaData()
    with db.engine.connect() as connection:
        metadata.reflect(connection)
        t = metadata.tables
        found = {
            "users": connection.execute(
                select(t["users"].c.id, t["users"].c.username).order_by(t["users"].c.id)
            ).all(),
            "files": connection.execute(
                select(t["files"].c.id, t["files"].c.status, t["files"].c.original_name).order_by(
                    t["files"].c.id
                )
            ).all(),
            "outbox": connection.execute(
                select(t["outbox"].c.file_id, t["outbox"].c.kind).order_by(t["outbox"].c.id)
            ).all(),
        }
    db.dispose()
    return found


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'app.db'}"
        return
    name = f"mig_{uuid.uuid4().hex[:10]}"
    admin = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield PG_URL.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.parametrize("revision", REVISIONS[1:])
def test_a_migration_keeps_every_row_up_down_and_up(empty_database, revision):
    before = REVISIONS[REVISIONS.index(revision) - 1]
    migrate(empty_database, before)
    fill(empty_database)
    filled = contents(empty_database)
    assert len(filled["files"]) == 3 and len(filled["outbox"]) == 3
    migrate(empty_database, revision)
    assert contents(empty_database) == filled
    migrate(empty_database, before, down=True)
    assert contents(empty_database) == filled
    migrate(empty_database)
    assert contents(empty_database) == filled


def test_the_first_migration_runs_up_down_and_up(empty_database):
    migrate(empty_database, REVISIONS[0])
    migrate(empty_database, "base", down=True)
    migrate(empty_database)
    assert contents(empty_database) == {"users": [], "files": [], "outbox": []}


def test_failures_recorded_before_kinds_were_data_get_their_kind(empty_database):
    """0011: the reconciler requeues outage failures by their kind; failures recorded before
    the column existed get the kind their message names."""
    migrate(empty_database, "0010")
    fill(empty_database)
    db = Database(empty_database)
    messages = {
        1: "Хранилище недоступно: S3 unreachable",
        2: "Файл не обработан после 10 попыток",
        3: "Хранилище отказало: AccessDenied",
    }
    with db.engine.begin() as connection:
        for file_id, message in messages.items():
            connection.execute(
                text("UPDATE files SET status = 'failed', error = :e WHERE id = :i"),
                {"e": message, "i": file_id},
            )
    migrate(empty_database, "0011")
    with db.engine.connect() as connection:
        kinds = dict(connection.execute(text("SELECT id, failure FROM files")).all())
    db.dispose()
    assert kinds == {1: "outage", 2: "exhausted", 3: "refused"}
