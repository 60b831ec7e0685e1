"""Celery settings of the workers and beat (lowercase names).

Values that depend on the environment (broker URL, timeouts, beat interval) are applied from
``common.settings.Settings`` by ``worker.app.celery_app``; this module holds the fixed policy.
"""

from common.tasks import ROUTES

# Reliability: a task is acknowledged only after it ran, and a task whose worker died (SIGKILL,
# OOM) goes back to the queue instead of being lost.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
task_ignore_result = True
task_serializer = "json"
accept_content = ["json"]

# Queues come from the task table (common/tasks.py): pushing and parsing scale apart.
task_default_queue = "uploads"
task_routes = ROUTES

# Events for Flower. Workers send them; the API's publishes do not (a "task-sent" event would
# double the Redis writes of every upload), so Flower shows a task from "received" on.
worker_send_task_events = True
task_send_sent_event = False

# A worker must not sit on a dead broker for minutes before it notices.
broker_connection_retry_on_startup = True
broker_heartbeat = 10
worker_cancel_long_running_tasks_on_connection_loss = False
task_track_started = True
worker_hijack_root_logger = False
