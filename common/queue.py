"""The Celery app both sides use: workers run its tasks, the API only publishes by task name."""

from __future__ import annotations

import logging

from celery import Celery
from kombu.exceptions import KombuError

from common.settings import Settings

log = logging.getLogger(__name__)

INGEST = "worker.tasks.ingest"
EXTRACT_METADATA = "worker.tasks.extract_metadata"
DELETE_OBJECT = "worker.tasks.delete_object"
RECONCILE = "worker.tasks.reconcile"


def celery_app(settings: Settings, name: str = "pipeline") -> Celery:
    """A Celery app configured from ``celeryconfig`` plus the environment-dependent settings."""
    app = Celery(name, set_as_current=False)
    app.config_from_object("celeryconfig")
    app.conf.update(
        broker_url=settings.redis_url,
        broker_transport_options={
            # Longer than the longest task with all its retries' countdowns, so that a message
            # is redelivered only when its worker is really gone.
            "visibility_timeout": settings.visibility_timeout,
            # Look for overdue unacknowledged messages (a killed worker's) every few seconds:
            # one cheap ZRANGE, so a redelivery waits little longer than the timeout itself.
            "unacked_restore_interval": max(1, min(10, settings.visibility_timeout // 5)),
            "unacked_restore_throttle": 1,
            "socket_timeout": 5,
            "socket_connect_timeout": 1,
            "retry_on_timeout": False,
            # Publishing gives up fast when Redis is down: the outbox holds the work, and an
            # upload must not wait seconds for a broker it does not need to answer.
            "max_retries": 1,
            "interval_start": 0,
            "interval_step": 0.1,
            "interval_max": 0.2,
        },
        beat_schedule={
            "reconcile": {
                "task": RECONCILE,
                "schedule": settings.reconcile_interval,
                "options": {"expires": settings.reconcile_interval},
            }
        },
    )
    return app


def task_id(kind: str, file_id: int, attempt: int = 0) -> str:
    """Deterministic task ids: one file's work is recognisable in Flower and logs."""
    return f"{kind}-{file_id}-{attempt}"


class Publisher:
    """Sends tasks by name; never raises when the broker is down (the outbox keeps the work)."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def send(self, name: str, file_id: int, *, attempt: int = 0) -> bool:
        kind = name.rsplit(".", 1)[-1]
        try:
            self.app.send_task(
                name, args=[file_id], task_id=task_id(kind, file_id, attempt), retry=False
            )
        except (KombuError, OSError) as exc:
            log.warning(
                "broker unavailable, %s of file %s left to the outbox: %s", kind, file_id, exc
            )
            return False
        return True
