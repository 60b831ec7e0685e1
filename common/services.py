"""The services every process type works with, built from the settings in one place: the
API (api.create_app), the workers (worker.tasks) and the operator commands (through the app)."""

from __future__ import annotations

from common.db import Database
from common.files.events import Doorbell
from common.files.pipeline import Pipeline
from common.queue import Publisher
from common.settings import Settings
from common.storage import Storage, from_settings


def build_pipeline(settings: Settings, *, storage: Storage | None = None) -> Pipeline:
    """The database, the store (``storage`` if one is built already), the publisher, and the
    pipeline over them."""
    db = Database(settings.database_url, timeout=settings.database_timeout)
    db.ring_with(Doorbell(settings.redis_url))
    return Pipeline(
        settings=settings,
        db=db,
        storage=storage or from_settings(settings),
        publisher=Publisher(settings),
    )
