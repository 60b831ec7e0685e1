"""The publisher's messages are the ones Celery itself would send."""

import json
import time

import redis

from common.queue import Publisher, task_message
from common.settings import Settings
from common.tasks import INGEST
from testkit.services import RedisServer
from testkit.tcpproxy import TcpProxy
from tests.conftest import eventually
from worker.app import celery_app


def test_task_message_matches_celery_protocol_2():
    app = celery_app(Settings.from_env({}))
    # The arguments Celery.send_task passes for a task sent by name with positional arguments.
    celery = app.amqp.as_task_v2(
        "ingest-7-0", INGEST, args=(7,), kwargs={}, origin="gen1@host", ignore_result=None
    )
    body, headers, properties = task_message(INGEST, (7,), "ingest-7-0", "gen1@host")
    assert headers == dict(celery.headers)
    assert body == celery.body
    assert properties == celery.properties


def test_publisher_reports_a_broker_lost_mid_life_and_recovers_with_it():
    """A connected publisher whose Redis dies answers False at once (the outbox keeps the
    work) instead of raising into the request, and publishes again once Redis is back."""
    redis_server = RedisServer()
    publisher = Publisher(Settings.from_env({}, redis_url=redis_server.url))
    try:
        assert publisher.send(INGEST, 1)
        redis_server.stop()
        started = time.monotonic()
        assert publisher.send(INGEST, 2) is False
        assert publisher.send(INGEST, 3) is False
        assert time.monotonic() - started < 2
        redis_server.start()
        assert eventually(lambda: publisher.send(INGEST, 4), timeout=10)
        queued = redis.Redis.from_url(redis_server.url).lrange("uploads", 0, -1)
        assert [json.loads(m)["headers"]["id"] for m in queued] == ["ingest-4-0"]
    finally:
        publisher.close()
        redis_server.stop()


def test_a_silent_broker_costs_a_publish_its_timeout_once(quiet_redis):
    """A publish to a Redis gone silent gives up after BROKER_PUBLISH_TIMEOUT without opening
    a second connection to wait on again (an upload answers within its bound); a connection
    the broker closed is retried at once, and nothing is published twice."""
    place = quiet_redis.connection_pool.connection_kwargs
    line = TcpProxy(place["port"])
    publisher = Publisher(
        Settings.from_env({}, redis_url=f"redis://127.0.0.1:{line.port}/{place['db']}")
    )
    try:
        assert publisher.send(INGEST, 1)
        line.silence()
        before = line.accepted
        assert publisher.send(INGEST, 2) is False
        assert line.accepted == before  # the timeout was not retried on a new connection
        line.up()
        assert publisher.send(INGEST, 3)  # a new connection: the silent one was dropped
        line.down()
        line.up()
        assert publisher.send(INGEST, 4)  # the closed connection retried on a new one
        queued = [json.loads(m)["headers"]["id"] for m in quiet_redis.lrange("uploads", 0, -1)]
        assert queued == ["ingest-4-0", "ingest-3-0", "ingest-1-0"]
    finally:
        publisher.close()
        line.close()


def test_published_message_is_what_kombu_would_write():
    """The envelope in the queue's list is kombu's own for the same message (all but the
    delivery tag, a fresh uuid each), and a Celery worker's transport reads it back."""
    from kombu import Connection, Queue

    redis_server = RedisServer()
    client = redis.Redis.from_url(redis_server.url)
    publisher = Publisher(Settings.from_env({}, redis_url=redis_server.url))
    try:
        assert publisher.send(INGEST, 7)
        ours = json.loads(client.rpop("uploads"))
        body, headers, properties = task_message(INGEST, (7,), "ingest-7-0", publisher._origin)
        with Connection(redis_server.url) as connection:
            connection.Producer().publish(
                body,
                exchange="",
                routing_key="uploads",
                serializer="json",
                headers=headers,
                delivery_mode=2,
                declare=[Queue("uploads")],
                **properties,
            )
            kombus = json.loads(client.rpop("uploads"))
            tags = ours["properties"].pop("delivery_tag"), kombus["properties"].pop("delivery_tag")
            assert tags[0] != tags[1]
            assert ours == kombus
            assert publisher.send(INGEST, 8)
            message = connection.SimpleQueue("uploads").get(timeout=5)
            assert message.headers["id"] == "ingest-8-0" and message.payload[0] == [8]
            message.ack()
    finally:
        publisher.close()
        client.close()
        redis_server.stop()
