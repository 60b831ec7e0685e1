"""What beat runs every RECONCILE_INTERVAL: nothing accepted is left behind.

- notices a broker that lost its data (its sentinel key is gone: restarted without persistence,
  failed over to an empty replica) and publishes every outstanding entry again at once,
  instead of after OUTBOX_STALE_AFTER;
- takes back files whose worker died (their claim's lease lapsed) and publishes them again;
- checks the invariant that every unfinished file has its ingest entry, and gives one back to a
  file that lost it (a bug of that kind then costs one interval, not a file);
- publishes outbox entries that never reached the broker, or whose message went missing (stale);
- gives up on an entry published OUTBOX_MAX_PUBLISHES times: the file ends ``failed``;
- puts files that failed because the store stayed down back in the pipeline once it answers
  (up to three rounds of retries per file);
- removes staged bytes nobody needs any more (finished files, uploads whose row never committed);
- prunes file events older than EVENTS_RETENTION, a bounded number a pass.

Passes may overlap (beat and ``flask reconcile``, or a pass longer than the interval): an
entry is marked published in the transaction that picks it, before it is sent, so a second
pass does not pick it again; what the broker refused is unmarked after.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, select

from common.files import direct, outbox
from common.files.pipeline import Pipeline, give_up, reclaim_lapsed
from common.models import Failure, File, FileEvent, FileStatus, OutboxKind
from common.naming import is_generated_name
from common.storage import StorageError
from common.tasks import TASK_FOR_KIND

log = logging.getLogger(__name__)

BATCH = 500
#: A staged file with no row this old is an upload whose transaction never committed.
ORPHAN_AGE = 3600
_KEEP_STAGED = (FileStatus.PENDING, FileStatus.PROCESSING, FileStatus.FAILED)


@dataclass
class ReconcileReport:
    reclaimed: int = 0
    published: int = 0
    failed: int = 0
    requeued: int = 0
    reaped: int = 0
    repaired: int = 0
    pruned: int = 0
    expired: int = 0  # direct uploads left open past UPLOAD_TTL, aborted


def reconcile(pipeline: Pipeline) -> ReconcileReport:
    """One pass of the reconciler."""
    report = ReconcileReport()
    pipeline.marks.flush()  # this process's own publishes, recorded before looking
    if pipeline.publisher.broker_lost_its_data():
        with pipeline.db.session() as session:
            lost = outbox.make_all_published_due(session)
        # Only now: had the pass failed before the commit, the next one must see the loss.
        pipeline.publisher.remember_broker()
        if lost:
            log.warning("reconcile: the broker lost its data; %d entries published again", lost)
    with pipeline.db.session() as session:
        reclaimed = reclaim_lapsed(session, BATCH, skip_locked=pipeline.db.supports_skip_locked)
    report.reclaimed = len(reclaimed)
    if reclaimed:
        log.warning("reconcile: took back files whose worker stopped: %s", reclaimed)
    with pipeline.db.session() as session:
        repaired = outbox.restore_missing(session, BATCH)
    report.repaired = len(repaired)
    if repaired:
        log.error("reconcile: unfinished files had lost their ingest entry, restored: %s", repaired)
    _republish(pipeline, report)
    _requeue_after_outage(pipeline, report)
    _reap_staging(pipeline, report)
    _prune_events(pipeline, report)
    report.expired = direct.expire_uploads(pipeline)
    if any(vars(report).values()):
        log.info("reconcile: %s", report)
    return report


def _republish(pipeline: Pipeline, report: ReconcileReport) -> None:
    settings = pipeline.settings
    db = pipeline.db
    with db.session() as session:
        entries = outbox.due(
            session,
            stale_after=timedelta(seconds=settings.outbox_stale_after),
            limit=BATCH,
            skip_locked=db.supports_skip_locked,
        )
        hopeless = [e for e in entries if e.publish_count >= settings.outbox_max_publishes]
        for entry in hopeless:  # given up in the same transaction: never entry-less and open
            if entry.kind != OutboxKind.INGEST:
                outbox.done(session, entry.file_id, entry.kind)
            elif give_up(session, entry.file_id, Failure.EXHAUSTED, entry.publish_count):
                report.failed += 1
        retry = [(e.file_id, e.kind, e.publish_count) for e in entries if e not in hopeless]
        by_kind: dict[OutboxKind, list[int]] = {}
        for file_id, kind, _count in retry:
            by_kind.setdefault(kind, []).append(file_id)
        for kind, file_ids in by_kind.items():
            outbox.mark_published(session, file_ids, kind)
    unsent: dict[OutboxKind, list[int]] = {}
    for file_id, kind, count in retry:
        # A task id of its own per publish (``ingest-<file>-<n>``), as Flower shows them.
        if pipeline.publisher.send(TASK_FOR_KIND[kind], file_id, attempt=count + 1):
            report.published += 1
        else:
            unsent.setdefault(kind, []).append(file_id)
    if unsent:
        with db.session() as session:
            for kind, file_ids in unsent.items():
                outbox.unmark_published(session, file_ids, kind)


def _requeue_after_outage(pipeline: Pipeline, report: ReconcileReport) -> None:
    """Files that failed because the store was down go back once it answers again. Each
    round of retries claims a file INGEST_MAX_RETRIES + 1 times: after three rounds it stays
    failed, for an operator to look at."""
    rounds = 3 * (pipeline.settings.ingest_max_retries + 1)
    query = (
        select(File.id)
        .where(
            File.status == FileStatus.FAILED,
            File.failure == Failure.OUTAGE,
            File.attempts < rounds,
        )
        .limit(BATCH)
    )
    with pipeline.db.reading() as session:
        failed = list(session.scalars(query))
    if not failed:
        return
    try:
        pipeline.storage.health()
    except StorageError:
        return
    report.requeued += sum(pipeline.requeue_failed(file_id) for file_id in failed)


def _reap_staging(pipeline: Pipeline, report: ReconcileReport) -> None:
    report.reaped += pipeline.storage.sweep(ORPHAN_AGE)
    staging = Path(pipeline.settings.staging_dir)
    if not staging.is_dir():
        return
    names = {p.name: p for p in staging.iterdir() if is_generated_name(p.name)}
    if not names:
        return
    statuses: dict[str, FileStatus] = {}
    listed = list(names)
    with pipeline.db.session() as session:
        for start in range(0, len(listed), BATCH):
            chunk = listed[start : start + BATCH]
            query = select(File.name, File.status).where(File.name.in_(chunk))
            statuses.update((name, status) for name, status in session.execute(query))
    now = time.time()
    for name, path in names.items():
        status = statuses.get(name)
        if status in _KEEP_STAGED:
            continue
        if status is None and now - _mtime(path) < ORPHAN_AGE:
            continue  # an upload still in flight in some API process
        path.unlink(missing_ok=True)
        report.reaped += 1


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


#: Events deleted by one statement, and statements a pass at most: 60,000 a pass, every
#: RECONCILE_INTERVAL, outpaces any rate of changes this service sees; each statement is short.
PRUNE_BATCH, PRUNE_STATEMENTS = 5000, 12


def _prune_events(pipeline: Pipeline, report: ReconcileReport) -> None:
    """Delete events older than EVENTS_RETENTION, oldest first, in bounded batches."""
    cut = datetime.now(UTC) - timedelta(seconds=pipeline.settings.events_retention)
    oldest = select(FileEvent.id).where(FileEvent.at < cut).order_by(FileEvent.id)
    for _ in range(PRUNE_STATEMENTS):
        with pipeline.db.session() as session:
            ids = oldest.limit(PRUNE_BATCH).scalar_subquery()
            pruned = session.execute(delete(FileEvent).where(FileEvent.id.in_(ids))).rowcount
        report.pruned += pruned
        if pruned < PRUNE_BATCH:
            return
