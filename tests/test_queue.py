"""The publisher's messages are the ones Celery itself would send."""

from common.queue import INGEST, celery_app, task_message
from common.settings import Settings


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
