"""Thin tasks: load by id, call ``common.files.pipeline``, decide retries (file ids in)."""

from __future__ import annotations

import contextlib
import logging
import random
import sys

from celery import Task
from celery.signals import worker_init, worker_process_init
from sqlalchemy.exc import OperationalError

from common.files.pipeline import Pipeline
from common.files.reconcile import reconcile as reconcile_once
from common.models import Failure, OutboxKind
from common.services import build_pipeline
from common.storage import (
    Storage,
    StorageIntegrityError,
    StorageUnavailable,
    from_settings,
    refusal_at_start,
)
from common.tasks import DELETE_OBJECT, DELETE_OBJECTS, EXTRACT_METADATA, INGEST, RECONCILE
from worker import app, settings, tuning

log = logging.getLogger(__name__)

#: Faults worth waiting out: the store or the database is down or misbehaving.
TRANSIENT = (StorageUnavailable, StorageIntegrityError, OperationalError)

_pipeline: Pipeline | None = None
_storage: Storage | None = None


def pipeline() -> Pipeline:
    """This process's pipeline, built on first use (after any fork)."""
    global _pipeline
    if _pipeline is None:
        _pipeline = build_pipeline(settings, storage=_storage)
    return _pipeline


@worker_init.connect
def _load_before_fork(**_kwargs) -> None:
    """Start-up work done once before the pool forks (worker/tuning.py), and the store checked:
    a bucket that does not exist stops the worker now, not at the first push."""
    global _storage
    _storage = from_settings(settings)
    reason = refusal_at_start(_storage)
    if reason:
        sys.exit(f"error: the object store refuses {settings.s3_bucket!r}: {reason}")
    tuning.preload(settings, _storage)
    tuning.freeze()


@worker_process_init.connect
def _reset_after_fork(**_kwargs) -> None:
    """A forked child must not share the parent's database connections."""
    global _pipeline
    if _pipeline is not None:
        _pipeline.db.engine.dispose(close=False)
    _pipeline = None


def backoff(retries: int) -> float:
    """Exponential backoff with full jitter: uniform in [1, min(cap, 2**retries)] seconds."""
    return random.uniform(1, max(1, min(settings.retry_backoff_max, 2**retries)))


#: A database outage is waited out however long it lasts (nothing can be recorded without the
#: database, not even a failure); its retries come at most this many seconds apart, so work
#: resumes soon after it is back.
DATABASE_RETRY_CAP = 30


def retry_or_give_up(
    task: Task, exc: Exception, failures: int, limit: int, give_up, keep_alive=None
) -> None:
    """Retry with backoff. Store faults count (``failures``, carried in the task's kwargs):
    after ``limit`` of them ``give_up(reason)`` is called instead. Database faults do not
    count: they are retried until the database answers."""
    if isinstance(exc, OperationalError):
        log.warning("%s[%s] database unavailable, will retry: %s", task.name, task.request.id, exc)
        countdown = min(DATABASE_RETRY_CAP, backoff(task.request.retries))
        raise task.retry(exc=exc, countdown=countdown, max_retries=None)
    if failures >= limit:
        give_up(f"{exc.__class__.__name__}: {exc}")
        return
    log.warning("%s[%s] will retry: %s", task.name, task.request.id, exc)
    if keep_alive is not None:
        with contextlib.suppress(OperationalError):  # the entry then simply ages
            keep_alive()
    raise task.retry(
        exc=exc,
        countdown=backoff(failures),
        kwargs={"failures": failures + 1},
        max_retries=None,
    )


@app.task(bind=True, name=INGEST, max_retries=None, soft_time_limit=300, time_limit=330)
def ingest(self: Task, file_id: int, failures: int = 0) -> str | None:
    """Verify a staged file, push it to the store, mark it stored (or rejected)."""
    try:
        status = pipeline().ingest(file_id, retried=self.request.retries > 0)
    except TRANSIENT as exc:
        retry_or_give_up(
            self,
            exc,
            failures,
            settings.ingest_max_retries,
            lambda reason: pipeline().fail(file_id, Failure.OUTAGE, reason),
            lambda: pipeline().keep_alive(file_id, OutboxKind.INGEST),
        )
        return "failed"
    return status.value if status else None


@app.task(bind=True, name=EXTRACT_METADATA, max_retries=None, soft_time_limit=120, time_limit=150)
def extract_metadata(self: Task, file_id: int, failures: int = 0) -> None:
    """Parse a stored file for image size, PDF pages and the like."""
    try:
        pipeline().extract(file_id)
    except TRANSIENT as exc:
        retry_or_give_up(
            self, exc, failures, 5, lambda reason: log.error("metadata of %s: %s", file_id, reason)
        )


@app.task(bind=True, name=DELETE_OBJECT, max_retries=None, soft_time_limit=60)
def delete_object(self: Task, file_id: int) -> None:
    """Remove the object of a deleted file; retried until the store answers."""
    try:
        pipeline().delete_object(file_id)
    except TRANSIENT as exc:
        raise self.retry(exc=exc, countdown=backoff(self.request.retries)) from None


@app.task(bind=True, name=DELETE_OBJECTS, max_retries=None, soft_time_limit=600)
def delete_objects(self: Task, file_ids: list[int]) -> None:
    """Remove the objects of many deleted files (a bulk delete); retried until the store
    answers. A retry goes over the list again: removing an object twice is harmless, and the
    files already done have no outbox entry left."""
    try:
        for file_id in file_ids:
            pipeline().delete_object(file_id)
    except TRANSIENT as exc:
        raise self.retry(exc=exc, countdown=backoff(self.request.retries)) from None


@app.task(name=RECONCILE, soft_time_limit=120)
def reconcile() -> dict:
    """Republish outbox entries, give up on hopeless ones, reap staged leftovers."""
    return vars(reconcile_once(pipeline()))
