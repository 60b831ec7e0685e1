"""The task table: every task the pipeline publishes by name, its queue, and the outbox kind
whose work it does. Celery's routes (celeryconfig.py), the publisher and the outbox read it."""

from __future__ import annotations

from dataclasses import dataclass

from common.models import OutboxKind


@dataclass(frozen=True)
class TaskSpec:
    name: str
    queue: str
    kind: OutboxKind | None  # the outbox entry it finishes; None for beat's own task


INGEST = "worker.tasks.ingest"
EXTRACT_METADATA = "worker.tasks.extract_metadata"
DELETE_OBJECT = "worker.tasks.delete_object"
DELETE_OBJECTS = "worker.tasks.delete_objects"
RECONCILE = "worker.tasks.reconcile"

# Two queues so that pushing and parsing scale apart; the reconciler runs beside the uploads.
TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(INGEST, "uploads", OutboxKind.INGEST),
        TaskSpec(EXTRACT_METADATA, "metadata", OutboxKind.METADATA),
        TaskSpec(DELETE_OBJECT, "uploads", OutboxKind.DELETE),
        # A bulk delete's objects, one message for them all (the entries stay one a file).
        TaskSpec(DELETE_OBJECTS, "uploads", OutboxKind.DELETE),
        TaskSpec(RECONCILE, "uploads", None),
    )
}

#: Celery's ``task_routes``.
ROUTES = {name: {"queue": spec.queue} for name, spec in TASKS.items()}
#: The task that does the work of one outbox entry of each kind (the first listed).
TASK_FOR_KIND: dict[OutboxKind, str] = {}
for _name, _spec in TASKS.items():
    if _spec.kind is not None:
        TASK_FOR_KIND.setdefault(_spec.kind, _name)
