"""The realtime hub's life on an embedded database (SQLite; the doorbell's Redis absent, as
the hub copes with): it stops, whenever the stop comes."""

from __future__ import annotations

import asyncio

import pytest

from realtime.hub import Hub
from testkit.processes import migrate, settings_for

#: Nothing listens there: the doorbell stays down and the reader polls.
NO_REDIS = "redis://127.0.0.1:1/0"


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hub")
    database_url = f"sqlite:///{tmp / 'app.db'}"
    migrate(database_url)
    return settings_for(tmp, database_url=database_url, redis_url=NO_REDIS)


@pytest.mark.parametrize("steps", range(4))
def test_the_hub_stops_when_the_doorbell_rang_just_before(settings, steps):
    """A ring and a stop within the same few turns of the event loop (events committed as the
    process is told to stop): the reader must not miss its cancellation and outlive stop(),
    which would leave the process running after SIGTERM."""

    async def ring_then_stop() -> bool:
        hub = Hub(settings)
        await hub.start()
        await asyncio.sleep(0.2)  # the reader waits for the doorbell or its poll now
        hub.ring()
        for _ in range(steps):
            await asyncio.sleep(0)
        stopping = asyncio.ensure_future(hub.stop())
        done, _ = await asyncio.wait({stopping}, timeout=5)
        if not done:  # let the run end: cancel what outlived stop()
            for task in asyncio.all_tasks() - {asyncio.current_task()}:
                task.cancel()
        return bool(done)

    assert asyncio.run(ring_then_stop()), "the hub was still running 5 s after stop()"
