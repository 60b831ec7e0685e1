"""Thin tasks: load by id, call ``common.pipeline``, decide retries. Arguments are file ids."""

from __future__ import annotations

import contextlib
import gc
import logging
import random
import sys

from celery import Task
from celery.signals import worker_init, worker_process_init
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import configure_mappers

from common.db import Database
from common.models import OutboxKind
from common.pipeline import Pipeline
from common.queue import DELETE_OBJECT, EXTRACT_METADATA, INGEST, RECONCILE, Publisher
from common.reconcile import reconcile as reconcile_once
from common.storage import (
    Storage,
    StorageIntegrityError,
    StorageUnavailable,
    from_settings,
    refusal_at_start,
)
from worker import app, settings

log = logging.getLogger(__name__)

#: Faults worth waiting out: the store or the database is down or misbehaving.
TRANSIENT = (StorageUnavailable, StorageIntegrityError, OperationalError)

_pipeline: Pipeline | None = None
_storage: Storage | None = None


def pipeline() -> Pipeline:
    """This process's pipeline, built on first use (after any fork)."""
    global _pipeline
    if _pipeline is None:
        _pipeline = Pipeline(
            settings=settings,
            db=Database(settings.database_url),
            storage=_storage or from_settings(settings),
            publisher=Publisher(settings),
        )
    return _pipeline


@worker_init.connect
def _load_before_fork(**_kwargs) -> None:
    """Do the slow start-up work once, in the main process, before the pool forks.

    Each pool process would otherwise load libmagic's database, Pillow, pypdf, the S3
    service model, the database driver and the broker transport on its first task: with
    eight processes on two cores that is seconds of CPU during which nothing is pushed. The
    children inherit all of it. The store client has opened no connection yet (its pool
    connects on first use), so sharing it across the fork is safe; database and broker
    connections are still made per process.
    """
    global _storage
    import common.extract  # noqa: F401 - pypdf, for the metadata task
    from common.sniff import preload

    preload()  # libmagic's database, Pillow's plugins
    _storage = from_settings(settings)
    reason = refusal_at_start(_storage)
    if reason:  # a missing bucket is found now, not at the first push
        sys.exit(f"error: the object store refuses {settings.s3_bucket!r}: {reason}")
    _storage.prepare()
    # Building a pipeline imports the database driver and the broker transport and sets up
    # the ORM mappers: do it once here (nothing connects yet); each child builds its own.
    Database(settings.database_url).dispose()
    Publisher(settings).close()
    configure_mappers()
    # What is loaded now lives as long as the process: keep the collector from walking it.
    gc.collect()
    gc.freeze()


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


def retry_or_give_up(task: Task, exc: Exception, give_up, keep_alive=None) -> None:
    """Retry with backoff; after the last retry call ``give_up(reason)`` instead."""
    if task.request.retries >= task.max_retries:
        give_up(f"{exc.__class__.__name__}: {exc}")
        return
    log.warning("%s[%s] will retry: %s", task.name, task.request.id, exc)
    if keep_alive is not None:
        # If the database is what is down, the outbox entry simply ages.
        with contextlib.suppress(OperationalError):
            keep_alive()
    raise task.retry(exc=exc, countdown=backoff(task.request.retries))


@app.task(
    bind=True,
    name=INGEST,
    max_retries=settings.ingest_max_retries,
    soft_time_limit=300,
    time_limit=330,
)
def ingest(self: Task, file_id: int) -> str | None:
    """Verify a staged file, push it to the store, mark it stored (or rejected)."""
    try:
        status = pipeline().ingest(file_id)
    except TRANSIENT as exc:
        retry_or_give_up(
            self,
            exc,
            lambda reason: pipeline().fail(file_id, "Хранилище недоступно: " + reason),
            lambda: pipeline().keep_alive(file_id, OutboxKind.INGEST),
        )
        return "failed"
    return status.value if status else None


@app.task(bind=True, name=EXTRACT_METADATA, max_retries=5, soft_time_limit=120, time_limit=150)
def extract_metadata(self: Task, file_id: int) -> None:
    """Parse a stored file for image size, PDF pages and the like."""
    try:
        pipeline().extract(file_id)
    except TRANSIENT as exc:
        retry_or_give_up(self, exc, lambda reason: log.error("metadata of %s: %s", file_id, reason))


@app.task(bind=True, name=DELETE_OBJECT, max_retries=None, soft_time_limit=60)
def delete_object(self: Task, file_id: int) -> None:
    """Remove the object of a deleted file; retried until the store answers."""
    try:
        pipeline().delete_object(file_id)
    except TRANSIENT as exc:
        raise self.retry(exc=exc, countdown=backoff(self.request.retries)) from None


@app.task(name=RECONCILE, soft_time_limit=120)
def reconcile() -> dict:
    """Republish outbox entries, give up on hopeless ones, reap staged leftovers."""
    return vars(reconcile_once(pipeline()))
