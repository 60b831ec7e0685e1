"""The publisher that the API, the workers and the reconciler send tasks with, and the options
of the workers' Celery app's Redis transport (worker/app.py)."""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import uuid

from common.settings import Settings
from common.tasks import TASKS

log = logging.getLogger(__name__)


#: A key this service keeps in the broker's database. When it is gone, Redis lost its data
#: (restarted without persistence, failed over to an empty replica) and the tasks queued in it.
SENTINEL = "pipeline:broker-sentinel"


def transport_options(settings: Settings) -> dict:
    """Options of the Redis transport of the workers' Celery app."""
    return {
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
        # Celery's own publishes (a retry's countdown) give up fast when Redis is down: the
        # outbox holds the work.
        "max_retries": 1,
        "interval_start": 0,
        "interval_step": 0.1,
        "interval_max": 0.2,
    }


def task_id(kind: str, file_id: int, attempt: int = 0) -> str:
    """Deterministic task ids: one file's work is recognisable in Flower and logs."""
    return f"{kind}-{file_id}-{attempt}"


class Publisher:
    """Sends tasks by name; never raises when the broker is down (the outbox keeps the work).

    Messages are Celery's task protocol 2 (docs.celeryq.dev, "Message Protocol"), built here
    as ``Celery.send_task`` would build them for a task with positional arguments only, in the
    envelope kombu's Redis transport stores (``transport_message``), pushed with one LPUSH on
    the queue the task table (``common.tasks``) names: exactly what kombu's producer writes for
    a queue bound to the default exchange (tests/test_queue.py compares the two). The workers
    consume them like any other. Loading Celery's application machinery for that costs every
    API process ~6 MiB and each upload a router, signals and a ``send_task`` call chain;
    kombu's producer, a Redis client object and ~0.35 ms of CPU a message (bench/RESULTS.md).
    """

    def __init__(self, settings: Settings) -> None:
        self._origin = f"gen{os.getpid()}@{socket.gethostname()}"
        self._url = settings.redis_url
        self._timeout = settings.broker_publish_timeout
        self._client = None  # one client (and its pool) for the process, made on first use

    def send(self, name: str, file_id: int, *, attempt: int = 0) -> bool:
        kind = name.rsplit(".", 1)[-1]
        return self._send(name, (file_id,), task_id(kind, file_id, attempt), f"file {file_id}")

    def send_batch(self, name: str, file_ids: list[int]) -> bool:
        """One task for many files (a bulk action): one message instead of one a file."""
        kind = name.rsplit(".", 1)[-1]
        batch = f"{kind}-batch-{uuid.uuid4().hex}"
        return self._send(name, (list(file_ids),), batch, f"{len(file_ids)} files")

    def _send(self, name: str, args: tuple, message_id: str, what: str) -> bool:
        queue = TASKS[name].queue
        message = transport_message(*task_message(name, args, message_id, self._origin), queue)
        try:
            self._redis().lpush(queue, message)
        except (self._redis_errors(), OSError) as exc:
            kind = name.rsplit(".", 1)[-1]
            log.warning("broker unavailable, %s of %s left to the outbox: %s", kind, what, exc)
            return False
        return True

    def broker_lost_its_data(self) -> bool | None:
        """True when the broker no longer holds ``SENTINEL``: whatever was queued before is
        gone. None when the broker does not answer. The sentinel is set again only by
        ``remember_broker`` once the loss is recorded, so a pass that fails in between finds
        the loss again."""
        try:
            return not self._redis().exists(SENTINEL)
        except (self._redis_errors(), OSError):
            return None

    def remember_broker(self) -> None:
        """Set ``SENTINEL``: what the broker holds from now on is known to the outbox."""
        try:
            self._redis().set(SENTINEL, os.getpid())
        except (self._redis_errors(), OSError) as exc:
            log.warning("could not set the broker sentinel: %s", exc)

    def _redis(self):
        """The process's client, made on first use (redis-py's pool reconnects after a broker
        restart, and after a fork makes connections of the child's own). It gives up fast
        when Redis is down or silent: an upload answers 201 either way, the outbox keeps the
        work. One immediate retry covers a connection the broker closed meanwhile; a timeout
        is not retried, so a silent Redis costs a publish ``BROKER_PUBLISH_TIMEOUT`` once,
        not twice."""
        if self._client is None:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            self._client = redis.Redis.from_url(
                self._url,
                socket_timeout=self._timeout,
                socket_connect_timeout=min(1, self._timeout),
                retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
            )
        return self._client

    @staticmethod
    def _redis_errors() -> type[Exception]:
        import redis

        return redis.RedisError

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def transport_message(body: tuple, headers: dict, properties: dict, queue: str) -> bytes:
    """A task message in the envelope kombu's Redis transport keeps in a queue's list
    (``kombu.transport.virtual.Channel``: ``prepare_message``, then ``basic_publish`` to the
    default exchange, whose routing key is the queue): the body JSON-serialised and base64
    encoded, persistent, priority 0, a fresh delivery tag."""
    return json.dumps(
        {
            "body": base64.b64encode(json.dumps(body).encode()).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": {
                **properties,
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    ).encode()


def task_message(name: str, args: tuple, task_id: str, origin: str) -> tuple[tuple, dict, dict]:
    """``(body, headers, properties)`` of a protocol-2 task message, as Celery builds them
    (``celery.app.amqp.AMQP.as_task_v2``) for a task sent with ``args`` only."""
    headers = {
        "lang": "py",
        "task": name,
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": repr(args),
        "kwargsrepr": "{}",
        "origin": origin,
        "ignore_result": None,  # as send_task leaves it: the task's own setting applies
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    return (args, {}, embed), headers, {"correlation_id": task_id, "reply_to": ""}
