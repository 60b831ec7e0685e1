"""Every change of a file writes one event in the same transaction as the change, whoever makes
it (the API, a worker, the reconciler, a bulk action, an account's deletion), on both
databases; a change that rolls back leaves none; the reconciler prunes old ones."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from common.files import events, states
from common.files.reconcile import reconcile
from common.models import FileEvent, FileStatus
from tests import samples
from tests.accounts import PASSWORD, account
from tests.conftest import wait_for_status
from tests.pipelines import accept


def events_of(db, file_id: int) -> list[str]:
    with db.session() as session:
        query = select(FileEvent.type).where(FileEvent.file_id == file_id).order_by(FileEvent.id)
        return list(session.scalars(query))


def test_an_upload_records_each_step_in_order_by_the_api_and_the_worker(client, clean_stack):
    reply = client.post("/files/upload", data={"file": (io.BytesIO(samples.pdf()), "report.pdf")})
    name = reply.get_json()["filename"]
    file = wait_for_status(clean_stack.db, name, {"stored"})
    with clean_stack.db.session() as session:
        found = session.execute(
            select(FileEvent.id, FileEvent.type, FileEvent.owner_id)
            .where(FileEvent.file_id == file.id)
            .order_by(FileEvent.id)
        ).all()
    assert [row.type for row in found][:3] == ["file.pending", "file.processing", "file.stored"]
    assert all(row.owner_id is None for row in found)  # open v1: an ownerless file


def test_a_change_that_rolls_back_leaves_no_event(pipeline):
    file = accept(pipeline, b"stays pending")
    with pytest.raises(RuntimeError), pipeline.db.session() as session:
        assert states.transition(session, file.id, FileStatus.DELETED)
        raise RuntimeError("the transaction fails after the change")
    assert events_of(pipeline.db, file.id) == ["file.pending"]
    assert pipeline.delete(file.name)
    assert events_of(pipeline.db, file.id) == ["file.pending", "file.deleted"]


def test_a_status_that_did_not_change_records_nothing(pipeline):
    file = accept(pipeline, b"one delete only")
    assert pipeline.delete(file.name)
    assert not pipeline.delete(file.name)  # already deleted: no transition, no event
    with pipeline.db.session() as session:
        assert not states.transition(session, file.id, FileStatus.STORED)
    assert events_of(pipeline.db, file.id) == ["file.pending", "file.deleted"]


def test_renames_labels_bulk_actions_and_account_deletion_record_their_events(
    token_api, clean_stack
):
    alice = account(token_api, "alice")
    body = {"file": ("notes.txt", b"plain words\n", "text/plain")}
    first = alice.post("/api/v2/files", files=body).json()["name"]
    second = alice.post("/api/v2/files", files=body).json()["name"]
    patched = alice.patch(
        f"/api/v2/files/{first}", json={"original_name": "renamed.txt", "tags": ["work"]}
    )
    assert patched.status_code == 200
    assert alice.patch(f"/api/v2/files/{first}", json={}).status_code == 200  # changes nothing
    bulk = {"action": "tag", "names": [first, second], "tags": ["urgent"]}
    assert alice.post("/api/v2/files/bulk", json=bulk).json()["succeeded"] == 2
    category = {"action": "set_category", "names": [second], "category": "docs"}
    assert alice.post("/api/v2/files/bulk", json=category).json()["succeeded"] == 1
    assert alice.delete("/api/v2/me", json={"password": PASSWORD}).status_code == 204

    with clean_stack.db.session() as session:
        rows = session.execute(
            select(FileEvent.file_id, FileEvent.type, FileEvent.owner_id).order_by(FileEvent.id)
        ).all()
    by_file: dict[int, list[str]] = {}
    for file_id, kind, owner in rows:
        assert owner == alice.id
        by_file.setdefault(file_id, []).append(kind)
    worker = ("file.processing", "file.stored", "file.metadata")
    changes = [[k for k in kinds if k not in worker] for kinds in by_file.values()]
    assert changes == [
        ["file.pending", "file.renamed", "file.labels", "file.labels", "file.deleted"],
        ["file.pending", "file.labels", "file.labels", "file.deleted"],
    ]


def test_the_reconciler_prunes_events_past_their_retention(pipeline):
    old, new = accept(pipeline, b"long ago"), accept(pipeline, b"just now")
    long_ago = datetime.now(UTC) - timedelta(seconds=pipeline.settings.events_retention + 60)
    with pipeline.db.session() as session:
        session.execute(update(FileEvent).where(FileEvent.file_id == old.id).values(at=long_ago))
    assert reconcile(pipeline).pruned == 1
    assert events_of(pipeline.db, old.id) == []
    assert events_of(pipeline.db, new.id) == ["file.pending"]
    assert reconcile(pipeline).pruned == 0


def test_a_missing_id_is_waited_for_while_its_transaction_may_still_commit(pipeline):
    """The reader's rule for gaps (common.files.events.Gaps): an id handed out to a transaction
    that has not ended is not passed; once that transaction ends, it is (PostgreSQL; SQLite's
    writers commit one at a time, in id order, so a gap there is settled at once)."""
    db = pipeline.db
    first, second = (accept(pipeline, f"gap {i}\n".encode()).id for i in range(2))
    with db.reading() as session:
        before = events.latest_id(session)
    postgresql = db.engine.dialect.name == "postgresql"
    slow = db._factory()
    try:
        if postgresql:  # SQLite would wait here for the write lock the slow one holds
            states.change(slow, first, "renamed", original_name="slow.txt")
            slow.flush()  # its event's id is handed out, not committed
            with db.session() as fast:
                states.change(fast, second, "renamed", original_name="fast.txt")
        gaps = events.Gaps()
        with db.reading() as session:
            if postgresql:
                found = [e.id for e in events.read(session, before, download_url=lambda f: None)]
                assert found == [before + 2]  # the slow one's id is missing
                assert not gaps.settled(session, before + 1)
            else:
                assert gaps.settled(session, before + 1)
        slow.rollback()
        with db.reading() as session:
            assert gaps.settled(session, before + 1)  # its transaction ended
            assert not events.present(session, before + 1, before + 1)  # a rollback's id
    finally:
        slow.close()
