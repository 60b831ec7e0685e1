"""What beat runs every RECONCILE_INTERVAL: nothing accepted is left behind.

- publishes outbox entries that never reached the broker, or whose message went missing (stale);
- gives up on an entry published OUTBOX_MAX_PUBLISHES times: the file ends ``failed``;
- removes staged bytes nobody needs any more (finished files, uploads whose row never committed).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from common import outbox
from common.models import File, FileStatus, OutboxKind, utcnow
from common.naming import is_generated_name
from common.pipeline import Pipeline

log = logging.getLogger(__name__)

BATCH = 500
#: A staged file with no row this old is an upload whose transaction never committed.
ORPHAN_AGE = 3600
_KEEP_STAGED = (FileStatus.PENDING, FileStatus.PROCESSING, FileStatus.FAILED)


@dataclass
class ReconcileReport:
    published: int = 0
    failed: int = 0
    reaped: int = 0


def reconcile(pipeline: Pipeline) -> ReconcileReport:
    """One pass of the reconciler."""
    report = ReconcileReport()
    _republish(pipeline, report)
    _reap_staging(pipeline, report)
    if report.published or report.failed or report.reaped:
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
            now=utcnow(),
        )
        give_up = [e for e in entries if e.publish_count >= settings.outbox_max_publishes]
        for entry in give_up:
            outbox.done(session, entry.file_id, entry.kind)
        retry = [(e.file_id, e.kind) for e in entries if e not in give_up]
    for entry in give_up:
        if entry.kind == OutboxKind.INGEST:
            reason = f"Файл не обработан после {entry.publish_count} попыток"
            pipeline.fail(entry.file_id, reason)
            report.failed += 1
    for file_id, kind in retry:
        report.published += pipeline.publish(file_id, kind)
    pipeline.marks.flush()  # a background job can afford to record its publishes at once


def _reap_staging(pipeline: Pipeline, report: ReconcileReport) -> None:
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
