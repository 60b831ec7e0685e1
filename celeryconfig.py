"""Celery settings shared by the workers, beat and the API's publisher (lowercase names).

Values that depend on the environment (broker URL, timeouts, beat interval) are applied from
``common.settings.Settings`` by ``common.queue.celery_app``; this module holds the fixed policy.
"""

# Reliability: a task is acknowledged only after it ran, and a task whose worker died (SIGKILL,
# OOM) goes back to the queue instead of being lost.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
task_ignore_result = True
task_serializer = "json"
accept_content = ["json"]

# Two queues so pushing and parsing scale apart; reconcile runs beside the uploads.
task_default_queue = "uploads"
task_routes = {
    "worker.tasks.ingest": {"queue": "uploads"},
    "worker.tasks.delete_object": {"queue": "uploads"},
    "worker.tasks.reconcile": {"queue": "uploads"},
    "worker.tasks.extract_metadata": {"queue": "metadata"},
}

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
