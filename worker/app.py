"""The Celery app of the workers and beat, built from celeryconfig.py and the settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from common.queue import transport_options
from common.settings import Settings
from common.tasks import RECONCILE

if TYPE_CHECKING:
    from celery import Celery


def celery_app(settings: Settings, name: str = "pipeline") -> Celery:
    """A Celery app configured from ``celeryconfig`` plus the environment-dependent settings."""
    from celery import Celery

    app = Celery(name, set_as_current=False)
    app.config_from_object("celeryconfig")
    app.conf.update(
        broker_url=settings.redis_url,
        broker_transport_options=transport_options(settings),
        beat_schedule={
            "reconcile": {
                "task": RECONCILE,
                "schedule": settings.reconcile_interval,
                "options": {"expires": settings.reconcile_interval},
            }
        },
    )
    return app
