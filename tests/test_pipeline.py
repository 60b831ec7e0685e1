"""The pipeline's guarantees, driven directly: idempotency, races, the outbox and the reconciler.

Tasks published here go to a Redis database no worker consumes, so each test decides when work
runs. Database and store are the stack's real ones.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import event, func, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from common.files.pipeline import Pipeline
from common.files.reconcile import ORPHAN_AGE, reconcile
from common.models import Failure, File, FileStatus, OutboxEntry, OutboxKind
from common.staging import StagedUpload
from tests import samples
from tests.pipelines import accept, make_pipeline, outbox_kinds, quiet_url, stage_bytes, status_of


def test_accept_writes_row_and_outbox_and_publishes(pipeline, quiet_redis):
    file = accept(pipeline, b"hello")
    pipeline.marks.flush()  # publishes are marked in batches, off the request path
    assert status_of(pipeline, file.id).status == FileStatus.PENDING
    with pipeline.db.session() as session:
        entry = session.scalars(select(OutboxEntry).where(OutboxEntry.file_id == file.id)).one()
        assert entry.kind == OutboxKind.INGEST
        assert entry.published_at is not None and entry.publish_count == 1
    assert quiet_redis.llen("uploads") == 1


def test_an_upload_whose_row_cannot_be_written_leaves_nothing(pipeline, quiet_redis):
    from dataclasses import replace

    from sqlalchemy import func
    from sqlalchemy.exc import IntegrityError

    first = accept(pipeline, b"first")
    clash = replace(stage_bytes(pipeline, b"second"), name=first.name)  # a name already taken
    assert clash.path.exists()
    with pytest.raises(IntegrityError):
        pipeline.accept(clash)
    assert not clash.path.exists()
    with pipeline.db.session() as session:
        assert session.scalar(select(func.count()).select_from(File)) == 1
        assert session.scalar(select(func.count()).select_from(OutboxEntry)) == 1
    assert quiet_redis.llen("uploads") == 1


def test_ingest_twice_is_idempotent(pipeline):
    file = accept(pipeline, samples.png(), "png")
    assert pipeline.ingest(file.id) == FileStatus.STORED
    first = status_of(pipeline, file.id)
    assert pipeline.ingest(file.id) == FileStatus.STORED
    again = status_of(pipeline, file.id)
    assert (again.etag, again.stored_at, again.md5) == (first.etag, first.stored_at, first.md5)
    assert pipeline.storage.head(file.name).etag == first.etag
    assert outbox_kinds(pipeline, file.id) == ["metadata"]
    assert not Path(pipeline.settings.staging_dir, file.name).exists()


def test_two_workers_racing_end_in_one_state(pipeline):
    file = accept(pipeline, b"race" * 10_000)
    barrier = threading.Barrier(4)
    results: list[FileStatus | None] = []

    def run():
        barrier.wait()
        results.append(pipeline.ingest(file.id))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    # One delivery claims and pushes; the others leave the file to its live claim (or find
    # it stored already).
    assert FileStatus.STORED in results and len(results) == 4
    assert set(results) <= {FileStatus.STORED, FileStatus.PROCESSING}
    final = status_of(pipeline, file.id)
    assert final.status == FileStatus.STORED and final.attempts == 1
    assert pipeline.storage.head(file.name).size == 40_000
    assert outbox_kinds(pipeline, file.id) == ["metadata"]


class GatedStorage:
    """The real store, with a gate that holds a push until the test opens it."""

    def __init__(self, storage):
        self._storage = storage
        self.entered = threading.Event()
        self.release = threading.Event()

    def put(self, request):
        self.entered.set()
        self.release.wait(30)
        return self._storage.put(request)

    def __getattr__(self, name):
        return getattr(self._storage, name)


def test_delete_during_push_leaves_no_object(pipeline):
    file = accept(pipeline, b"doomed")
    gated = GatedStorage(pipeline.storage)
    racing = replace(pipeline, storage=gated)
    result: list[FileStatus | None] = []
    worker = threading.Thread(target=lambda: result.append(racing.ingest(file.id)))
    worker.start()
    assert gated.entered.wait(10)
    assert pipeline.delete(file.name)  # the API's delete, while the push is held
    gated.release.set()
    worker.join(30)
    assert result == [FileStatus.DELETED]
    assert status_of(pipeline, file.id).status == FileStatus.DELETED
    with pytest.raises(FileNotFoundError):
        pipeline.storage.head(file.name)
    assert outbox_kinds(pipeline, file.id) == []


def test_rejected_file_is_never_pushed(pipeline):
    file = accept(pipeline, samples.HTML, "png")
    assert pipeline.ingest(file.id) == FileStatus.REJECTED
    row = status_of(pipeline, file.id)
    assert "text/html" in row.error and row.content_type == "text/html"
    with pytest.raises(FileNotFoundError):
        pipeline.storage.head(file.name)
    assert outbox_kinds(pipeline, file.id) == []


def test_redelivery_after_push_without_staged_copy_recovers_from_the_store(pipeline):
    file = accept(pipeline, b"pushed before the crash")
    pipeline.ingest(file.id)
    with pipeline.db.session() as session:  # as if the worker died before recording the push
        session.execute(update(File).where(File.id == file.id).values(status=FileStatus.PROCESSING))
    assert pipeline.ingest(file.id) == FileStatus.STORED


def test_upload_survives_a_dead_broker_and_the_reconciler_publishes_it(clean_stack, quiet_redis):
    dead = make_pipeline(clean_stack, "redis://127.0.0.1:1/0")
    started = time.monotonic()
    file = accept(dead, b"accepted while redis is down")
    assert time.monotonic() - started < 5
    assert status_of(dead, file.id).status == FileStatus.PENDING
    with dead.db.session() as session:
        entry = session.scalars(select(OutboxEntry).where(OutboxEntry.file_id == file.id)).one()
        assert entry.published_at is None
        entry.created_at = datetime.now(UTC) - timedelta(seconds=30)  # past the grace period
    dead.marks.close()
    dead.publisher.close()
    alive = make_pipeline(clean_stack, quiet_url(quiet_redis))
    report = reconcile(alive)
    assert report.published == 1
    assert quiet_redis.llen("uploads") == 1
    assert alive.ingest(file.id) == FileStatus.STORED
    alive.marks.close()
    alive.publisher.close()


def test_stale_entries_are_republished_then_given_up(clean_stack, quiet_redis):
    pipeline = make_pipeline(
        clean_stack, quiet_url(quiet_redis), outbox_stale_after=60, outbox_max_publishes=2
    )
    file = accept(pipeline, b"lost message")

    def age_entry():
        pipeline.marks.flush()  # the publish is recorded; then it grows old
        with pipeline.db.session() as session:
            session.execute(
                update(OutboxEntry)
                .where(OutboxEntry.file_id == file.id)
                .values(published_at=datetime.now(UTC) - timedelta(seconds=120))
            )

    age_entry()
    assert reconcile(pipeline).published == 1
    age_entry()
    report = reconcile(pipeline)
    assert report.failed == 1
    row = status_of(pipeline, file.id)
    assert row.status == FileStatus.FAILED and "2" in row.error
    assert outbox_kinds(pipeline, file.id) == []
    assert Path(pipeline.settings.staging_dir, file.name).exists()  # kept for a re-queue

    assert pipeline.requeue_failed(file.id)
    assert status_of(pipeline, file.id).status == FileStatus.PENDING
    assert pipeline.ingest(file.id) == FileStatus.STORED
    pipeline.marks.close()
    pipeline.publisher.close()


def test_fail_after_last_retry_records_the_reason(pipeline):
    file = accept(pipeline, b"unlucky")
    pipeline.fail(file.id, Failure.OUTAGE, "S3 unreachable")
    row = status_of(pipeline, file.id)
    assert row.status == FileStatus.FAILED and row.failure == Failure.OUTAGE
    assert row.error == "Хранилище недоступно: S3 unreachable"
    assert outbox_kinds(pipeline, file.id) == []


def test_reconciler_reaps_only_unneeded_staged_files(pipeline):
    staging = Path(pipeline.settings.staging_dir)
    pending = accept(pipeline, b"still waiting")
    rejected = accept(pipeline, samples.HTML, "gif")
    pipeline.ingest(rejected.id)
    Path(staging, rejected.name).write_bytes(b"left behind by a crash")
    young_orphan = staging / "20250101_000000_00000000000000aa.txt"
    old_orphan = staging / "20250101_000000_00000000000000bb.txt"
    for orphan in (young_orphan, old_orphan):
        orphan.write_bytes(b"no row")
    past = time.time() - ORPHAN_AGE - 10
    os.utime(old_orphan, (past, past))

    assert reconcile(pipeline).reaped == 2
    assert Path(staging, pending.name).exists()
    assert young_orphan.exists()
    assert not old_orphan.exists() and not Path(staging, rejected.name).exists()


def test_failed_commit_leaves_no_staged_file(clean_stack, quiet_redis):
    pipeline = make_pipeline(clean_stack, quiet_url(quiet_redis))
    first = accept(pipeline, b"one")
    clone = StagedUpload(
        Path(pipeline.settings.staging_dir, "20250101_000000_00000000000000cc.txt"),
        first.name,  # a name collision makes the insert fail
        "x.txt",
        "txt",
        1,
        "0" * 64,
        datetime.now(UTC),
    )
    clone.path.write_bytes(b"x")
    with pytest.raises(IntegrityError):
        pipeline.accept(clone)
    assert not clone.path.exists()
    with pipeline.db.session() as session:
        assert session.scalar(select(func.count()).select_from(File)) == 1
    pipeline.marks.close()
    pipeline.publisher.close()


# -- claims, leases and give-ups -------------------------------------------------------------


def held_by_a_dead_worker(pipeline: Pipeline, file_id: int, *, lapsed: bool) -> None:
    """The file as a worker on another host left it: claimed, lease lapsed or not."""
    seconds = -1 if lapsed else 3600
    with pipeline.db.session() as session:
        session.execute(
            update(File)
            .where(File.id == file_id)
            .values(
                status=FileStatus.PROCESSING,
                claim="elsewhere:1:0123456789ab",
                lease_until=datetime.now(UTC) + timedelta(seconds=seconds),
            )
        )


def test_a_lapsed_claim_is_taken_back_and_published_at_once(pipeline, quiet_redis):
    lapsed = accept(pipeline, b"its worker died")
    live = accept(pipeline, b"its worker is busy")
    pipeline.marks.flush()
    quiet_redis.delete("uploads")
    held_by_a_dead_worker(pipeline, lapsed.id, lapsed=True)
    held_by_a_dead_worker(pipeline, live.id, lapsed=False)
    report = reconcile(pipeline)
    assert (report.reclaimed, report.published) == (1, 1)
    assert status_of(pipeline, lapsed.id).status == FileStatus.PENDING
    assert status_of(pipeline, live.id).status == FileStatus.PROCESSING
    assert quiet_redis.llen("uploads") == 1
    assert pipeline.ingest(live.id) == FileStatus.PROCESSING  # left to its holder
    assert pipeline.ingest(lapsed.id) == FileStatus.STORED


@contextmanager
def held_in_the_push(pipeline: Pipeline, file: File) -> Iterator[list[FileStatus | None]]:
    """Delivery A runs ``ingest`` in a thread and is held inside the push until the block
    ends; the list then holds what it returned."""
    gated = GatedStorage(pipeline.storage)
    result: list[FileStatus | None] = []
    worker = threading.Thread(
        target=lambda: result.append(replace(pipeline, storage=gated).ingest(file.id))
    )
    worker.start()
    assert gated.entered.wait(10)
    try:
        yield result
    finally:
        gated.release.set()
        worker.join(30)


def test_a_working_delivery_renews_its_lease(clean_stack, quiet_redis):
    # CLAIM_LEASE of 3 s, so that a push held for 4 s outlives the first lease.
    pipeline = make_pipeline(clean_stack, quiet_url(quiet_redis), claim_lease=3)
    file = accept(pipeline, b"slow push")
    with held_in_the_push(pipeline, file) as result:
        time.sleep(4)
        assert reconcile(pipeline).reclaimed == 0
    assert result == [FileStatus.STORED]
    pipeline.marks.close()
    pipeline.publisher.close()


def test_a_give_up_leaves_a_live_claim_alone(pipeline):
    """Delivery A is inside the push; delivery B reaches its last retry and gives up."""
    file = accept(pipeline, b"A is pushing")
    with held_in_the_push(pipeline, file) as result:
        pipeline.fail(file.id, Failure.OUTAGE, "B gave up")
        assert status_of(pipeline, file.id).status == FileStatus.PROCESSING
    assert result == [FileStatus.STORED]
    row = status_of(pipeline, file.id)
    assert row.status == FileStatus.STORED and row.error is None
    assert pipeline.storage.head(file.name).size == len(b"A is pushing")
    assert not Path(pipeline.settings.staging_dir, file.name).exists()


def test_a_push_that_outlives_a_give_up_ends_stored_with_its_object(pipeline):
    """A's lease lapsed while it pushed (its database went away, say), and the file was given
    up; the push then succeeds: the file is stored, not failed with an object in the store."""
    file = accept(pipeline, b"late but whole")
    with held_in_the_push(pipeline, file) as result:
        with pipeline.db.session() as session:
            session.execute(
                update(File).where(File.id == file.id).values(lease_until=datetime.now(UTC))
            )
        pipeline.fail(file.id, Failure.EXHAUSTED, 10)
        assert status_of(pipeline, file.id).status == FileStatus.FAILED
    assert result == [FileStatus.STORED]
    row = status_of(pipeline, file.id)
    assert row.status == FileStatus.STORED and row.etag
    assert pipeline.storage.head(file.name).size == len(b"late but whole")
    assert not Path(pipeline.settings.staging_dir, file.name).exists()
    assert outbox_kinds(pipeline, file.id) == ["metadata"]


def test_a_give_up_is_one_transaction_with_the_failure(clean_stack, quiet_redis):
    """A database error in the middle of giving up leaves the entry and the file as they
    were; a later pass gives up properly (never a pending file with no outbox entry)."""
    pipeline = make_pipeline(clean_stack, quiet_url(quiet_redis), outbox_max_publishes=1)
    file = accept(pipeline, b"hopeless")
    pipeline.marks.flush()
    with pipeline.db.session() as session:  # published once, long ago
        session.execute(
            update(OutboxEntry)
            .where(OutboxEntry.file_id == file.id)
            .values(published_at=datetime.now(UTC) - timedelta(days=1))
        )
    failures = []

    def once(conn, cursor, statement, parameters, context, executemany):
        if "UPDATE files" in statement and not failures:  # alone, or in a WITH
            failures.append(statement)
            raise OperationalError(statement, parameters, Exception("connection lost"))

    event.listen(pipeline.db.engine, "before_cursor_execute", once)
    try:
        with pytest.raises(OperationalError):
            reconcile(pipeline)
    finally:
        event.remove(pipeline.db.engine, "before_cursor_execute", once)
    assert failures
    assert status_of(pipeline, file.id).status == FileStatus.PENDING
    assert outbox_kinds(pipeline, file.id) == ["ingest"]
    assert [reconcile(pipeline).failed for _ in range(3)] == [1, 0, 0]
    assert status_of(pipeline, file.id).status == FileStatus.FAILED
    assert outbox_kinds(pipeline, file.id) == []
    pipeline.marks.close()
    pipeline.publisher.close()


class SlowPublisher:
    """The real publisher, 10 ms a message: a reconciler pass takes a while."""

    def __init__(self, publisher):
        self._publisher = publisher

    def send(self, *args, **kwargs):
        time.sleep(0.01)
        return self._publisher.send(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._publisher, name)


def test_overlapping_reconciler_passes_publish_each_entry_once(clean_stack, quiet_redis):
    dead = make_pipeline(clean_stack, "redis://127.0.0.1:1/0")
    files = [accept(dead, f"unsent {i}".encode()) for i in range(40)]
    dead.marks.close()
    dead.publisher.close()
    with dead.db.session() as session:  # past the grace period of unsent entries
        session.execute(
            update(OutboxEntry).values(created_at=datetime.now(UTC) - timedelta(seconds=30))
        )
    passes = [make_pipeline(clean_stack, quiet_url(quiet_redis)) for _ in range(2)]
    reports = []

    def run(pipeline: Pipeline) -> None:
        reports.append(reconcile(replace(pipeline, publisher=SlowPublisher(pipeline.publisher))))

    first = threading.Thread(target=run, args=(passes[0],))
    first.start()
    time.sleep(0.1)  # the second pass starts while the first is publishing
    run(passes[1])
    first.join(30)
    assert sum(r.published for r in reports) == len(files)
    assert quiet_redis.llen("uploads") == len(files)
    with dead.db.session() as session:
        counts = session.scalars(select(OutboxEntry.publish_count)).all()
    assert counts == [1] * len(files)
    for pipeline in passes:
        pipeline.marks.close()
        pipeline.publisher.close()


def test_a_push_the_store_refuses_fails_at_once_with_the_reason(pipeline):
    """A permanent refusal (real S3's MetadataTooLarge, AccessDenied...) is no outage: the file
    ends failed at the first attempt, its bytes kept for a requeue once the cause is fixed."""
    from common.storage.s3 import S3Storage
    from tests.s3stub import S3Stub, error_xml

    stub = S3Stub()
    try:
        stub.responses["PUT"] = (400, {}, error_xml("MetadataTooLarge", "over 2 KB"))
        refusing = replace(pipeline, storage=S3Storage("bucket", endpoint_url=stub.url))
        file = accept(pipeline, b"refused")
        assert refusing.ingest(file.id) == FileStatus.FAILED
    finally:
        stub.close()
    assert [method for method, _ in stub.seen] == ["PUT"]  # asked once, not retried
    row = status_of(pipeline, file.id)
    assert row.status == FileStatus.FAILED and "MetadataTooLarge" in row.error
    assert outbox_kinds(pipeline, file.id) == []
    assert Path(pipeline.settings.staging_dir, file.name).exists()


def test_a_broker_that_lost_its_data_gets_the_outstanding_work_again(pipeline, quiet_redis):
    """Redis came back empty: the queued tasks are gone, but their entries look published.
    One pass publishes them again; a broker that kept its data gets nothing twice."""
    files = [accept(pipeline, f"queued {i}".encode()) for i in range(3)]
    pipeline.marks.flush()
    assert quiet_redis.llen("uploads") == 3
    assert reconcile(pipeline).published == 0  # a healthy backlog is left alone
    assert quiet_redis.llen("uploads") == 3
    quiet_redis.flushdb()  # as a restart without persistence leaves it
    assert reconcile(pipeline).published == 3
    assert quiet_redis.llen("uploads") == 3
    assert reconcile(pipeline).published == 0
    for file in files:
        assert pipeline.ingest(file.id) == FileStatus.STORED


def test_files_failed_by_a_store_outage_go_back_once_the_store_answers(pipeline, quiet_redis):
    from common.storage.s3 import S3Storage

    outage = accept(pipeline, b"the store was down")
    refused = accept(pipeline, b"the store said no")
    worn = accept(pipeline, b"three rounds already")
    pipeline.fail(outage.id, Failure.OUTAGE, "S3 unreachable")
    pipeline.fail(refused.id, Failure.REFUSED, "S3 AccessDenied")
    pipeline.fail(worn.id, Failure.OUTAGE, "S3 unreachable")
    with pipeline.db.session() as session:
        session.execute(update(File).where(File.id == worn.id).values(attempts=27))
        # The kind of failure is data: rewording the message changes nothing.
        session.execute(update(File).where(File.id == outage.id).values(error="Store down"))
    still_down = replace(pipeline, storage=S3Storage("bucket", endpoint_url="http://127.0.0.1:1"))
    assert reconcile(still_down).requeued == 0
    report = reconcile(pipeline)
    assert report.requeued == 1
    requeued = status_of(pipeline, outage.id)
    assert requeued.status == FileStatus.PENDING and requeued.failure is None
    assert status_of(pipeline, refused.id).status == FileStatus.FAILED
    assert status_of(pipeline, worn.id).status == FileStatus.FAILED
    assert pipeline.ingest(outage.id) == FileStatus.STORED


class BrokenStorage(GatedStorage):
    """The real store, whose push fails with an error that is nobody's outage (a bug)."""

    def put(self, request):
        raise RuntimeError("a bug in the push")


def test_an_unexpected_error_leaves_the_claim_to_lapse_and_the_reconciler_hands_it_out(
    pipeline, quiet_redis
):
    file = accept(pipeline, b"hits a bug")
    pipeline.marks.flush()
    quiet_redis.delete("uploads")
    with pytest.raises(RuntimeError):
        replace(pipeline, storage=BrokenStorage(pipeline.storage)).ingest(file.id)
    assert status_of(pipeline, file.id).status == FileStatus.PROCESSING  # claim kept
    assert reconcile(pipeline).reclaimed == 0  # its lease is still live
    with pipeline.db.session() as session:  # CLAIM_LEASE later
        session.execute(
            update(File).where(File.id == file.id).values(lease_until=datetime.now(UTC))
        )
    report = reconcile(pipeline)
    assert (report.reclaimed, report.published) == (1, 1)
    assert quiet_redis.llen("uploads") == 1
    assert pipeline.ingest(file.id) == FileStatus.STORED


def test_a_delivery_whose_lease_lapsed_leaves_the_new_holders_entry(pipeline, quiet_redis):
    """A claims and pauses past its lease; the reconciler hands the file to B; A's push is
    refused. B then dies: the reconciler must still be able to bring the file back."""
    from common.files.pipeline.ingest import Claimed
    from tests.test_pipeline_invariants import FaultyStorage, advance

    file = accept(pipeline, b"two holders")
    a = pipeline.take(file.id)
    assert isinstance(a, Claimed)
    advance(pipeline, pipeline.settings.claim_lease + 1)
    assert reconcile(pipeline).reclaimed == 1
    b = pipeline.take(file.id)
    assert isinstance(b, Claimed)
    refusing = FaultyStorage(pipeline.storage)
    refusing.mode = "refuses"
    assert replace(pipeline, storage=refusing).work(a) == FileStatus.PROCESSING
    assert outbox_kinds(pipeline, file.id) == ["ingest"]
    advance(pipeline, pipeline.settings.claim_lease + 1)  # B died
    report = reconcile(pipeline)
    assert (report.reclaimed, report.repaired, report.published) == (1, 0, 1)
    assert pipeline.ingest(file.id) == FileStatus.STORED
