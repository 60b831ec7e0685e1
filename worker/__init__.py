"""The Celery app of the workers and beat: ``celery -A worker worker -Q uploads`` and friends."""

import sys

from common.queue import celery_app
from common.settings import Settings, SettingsError

try:
    settings = Settings.from_env()
except SettingsError as exc:
    sys.exit(f"error: {exc}")

app = celery_app(settings, "worker")
app.conf.imports = ("worker.tasks",)
