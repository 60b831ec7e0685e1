"""The Celery app of the workers and beat: ``celery -A worker worker -Q uploads`` and friends."""

from celery.signals import setup_logging, task_postrun, task_prerun

from common import logs
from common.settings import Settings
from worker.app import celery_app

settings = Settings.from_env_or_exit()

app = celery_app(settings, "worker")
app.conf.imports = ("worker.tasks",)


@setup_logging.connect
def _logging(**_kwargs) -> None:
    """Our handler instead of Celery's: JSON lines when LOG_FORMAT=json, each with its task id."""
    logs.configure_logging(settings.log_format)


@task_prerun.connect
def _enter_task(task_id=None, task=None, **_kwargs) -> None:
    task.request.log_token = logs.task_id.set(task_id)


@task_postrun.connect
def _leave_task(task=None, **_kwargs) -> None:
    token = getattr(task.request, "log_token", None)
    if token is not None:
        logs.task_id.reset(token)
