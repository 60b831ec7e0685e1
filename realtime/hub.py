"""One reader of the event table per process, and the connections it serves.

The reader keeps a cursor: every event up to it was handed to the connections that want it.
It reads what follows the cursor, woken by the doorbell (Redis pub/sub, rung after each commit
that wrote events) or by its own poll, at most ``POLL`` seconds apart, so a silent doorbell
delays an event by at most that and loses none. An id missing below the ones read holds the
events after it back until no transaction can still commit it (``events.Gaps``): clients get
ids in increasing order, and a replay after an id they got never leaves one out.

Each connection has a bounded queue. One that does not keep up is closed (its client resumes
from the last id it got); one whose credential is revoked is closed within ``RECHECK``
seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import orjson
import redis.asyncio as aioredis
from anyio import to_thread

from common.accounts import Accounts
from common.accounts.credentials import Holder, recheck
from common.db import Database
from common.files import events
from common.models import FileStatus, utcnow
from common.settings import Settings
from common.storage import from_settings

log = logging.getLogger(__name__)

#: The longest an event waits for the reader when the doorbell is silent (seconds).
POLL = 1.0
#: How soon the reader looks again while a gap holds events back.
GAP_POLL = 0.02
#: Events read at once (also a replay's page).
BATCH = 500
#: Events waiting for one connection beyond which it is closed as too slow.
QUEUE = 1000
#: How often open connections' credentials are asked again (a revocation closes them).
RECHECK = 30.0


@dataclass
class Closed:
    """The hub closed the connection: ``code`` for a WebSocket, ``reason`` for both."""

    code: int
    reason: str


@dataclass(eq=False)
class Connection:
    """One client's stream: what it may see, what it asked for, what it was sent."""

    holder: Holder
    everyone: bool  # an admin's ?all=1
    names: frozenset[str] | None = None  # {"type": "subscribe"}: only these files
    last: int = 0  # the highest id sent
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(QUEUE))

    def wants(self, event: events.Event) -> bool:
        if not self.everyone and event.owner_id != self.holder.user_id:
            return False
        return self.names is None or event.body["file"]["name"] in self.names

    def offer(self, item: Any) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.close(Closed(4008, "too slow: resume from the last id received"))

    def close(self, closed: Closed) -> None:
        while not self.queue.empty():  # the close goes first: nothing else matters now
            self.queue.get_nowait()
        self.queue.put_nowait(closed)


class Hub:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.database_url, timeout=settings.database_timeout)
        self.accounts = Accounts.from_settings(settings, self.db)
        self.storage = from_settings(settings)
        self.connections: set[Connection] = set()
        self.cursor = 0
        self.last_at = utcnow()  # when the last event handed out happened
        self.gaps = events.Gaps()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self.doorbell_up = False

    # -- life --------------------------------------------------------------------------------

    async def start(self) -> None:
        self.cursor = await self._in_thread(self._latest)
        self._tasks = [
            asyncio.create_task(self._read_forever(), name="events reader"),
            asyncio.create_task(self._listen_forever(), name="events doorbell"),
            asyncio.create_task(self._recheck_forever(), name="credentials recheck"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for connection in list(self.connections):
            connection.close(Closed(1001, "the server is going away"))
        self.accounts.close()
        self.db.dispose()

    def ring(self) -> None:
        """Wake the reader now: events were committed (the doorbell rang)."""
        self._wake.set()

    def join(self, holder: Holder, everyone: bool) -> Connection:
        connection = Connection(holder, everyone)
        self.connections.add(connection)
        return connection

    def leave(self, connection: Connection) -> None:
        self.connections.discard(connection)

    # -- credentials ------------------------------------------------------------------------

    async def holder_of(self, token: str) -> Holder | None:
        from common.accounts.credentials import holder_of

        return await self._in_thread(holder_of, self.accounts, token)

    async def redeem(self, ticket: str) -> Holder | None:
        from common.accounts import tickets

        ref = await self._in_thread(tickets.redeem, self.accounts, ticket)
        return None if ref is None else await self._in_thread(recheck, self.accounts, ref)

    async def _recheck_forever(self) -> None:
        while True:
            await asyncio.sleep(RECHECK)
            refs = {connection.holder.ref for connection in self.connections}
            for ref in refs:
                try:
                    holder = await self._in_thread(recheck, self.accounts, ref)
                except Exception:  # the database is away: ask again next time
                    log.warning("credentials recheck failed", exc_info=True)
                    break
                for connection in [c for c in self.connections if c.holder.ref == ref]:
                    if holder is None:
                        connection.close(Closed(4401, "the credential was revoked"))
                    elif connection.everyone and not holder.is_admin:
                        connection.close(Closed(4403, "no longer an admin"))

    # -- reading -----------------------------------------------------------------------------

    async def _read_forever(self) -> None:
        delay = POLL
        while True:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation that
            # comes as the doorbell rings, and the reader would outlive stop() (a process that
            # never exits on SIGTERM).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            self._wake.clear()
            try:
                found, cursor, behind = await self._in_thread(self._advance, self.cursor)
            except Exception:
                log.warning("reading events failed; trying again", exc_info=True)
                delay = POLL
                continue
            for event in found:
                for connection in list(self.connections):
                    if connection.wants(event):
                        connection.offer(event)
            if found:
                self.last_at = found[-1].at
            if cursor < self.cursor:  # the ids went back: what comes now is new, however low
                for connection in self.connections:
                    connection.last = min(connection.last, cursor)
            self.cursor = cursor
            # More to read at once; a gap: soon; otherwise the doorbell or the poll.
            delay = 0 if behind == "more" else GAP_POLL if behind == "gap" else POLL

    def _advance(self, cursor: int) -> tuple[list[events.Event], int, str | None]:
        """What follows ``cursor`` that may be handed out now, the new cursor, and why the
        reader should look again soon (``more`` to read, a ``gap`` holding events back)."""
        with self.db.reading() as session:
            found = events.read(session, cursor, limit=BATCH, download_url=self.download_url())
            ready: list[events.Event] = []
            for event in found:
                if event.id != cursor + 1:  # ids cursor+1 .. event.id-1 are missing
                    if not self.gaps.settled(session, cursor + 1):
                        return ready, cursor, "gap"
                    if events.present(session, cursor + 1, event.id - 1):
                        return ready, cursor, "more"  # committed meanwhile: read them first
                    self.gaps.forget(event.id)
                ready.append(event)
                cursor = event.id
            if not found and events.latest_id(session) < cursor:
                # The table's ids went back (a database restored, or emptied with its sequence
                # restarted): what was written after the last event handed out is new, whatever
                # its id; what is older was handed out already, or is from before a restore.
                cursor = events.latest_at(session, self.last_at)
                log.warning("event ids went back: reading again after id %d", cursor)
        return ready, cursor, "more" if len(found) == BATCH else None

    def _latest(self) -> int:
        with self.db.reading() as session:
            return events.latest_id(session)

    def download_url(self) -> Callable[[Any], str | None]:
        ttl = self.settings.presigned_url_ttl

        def url_of(file: Any) -> str | None:
            if file.status != FileStatus.STORED:
                return None
            url = self.storage.presign_get(file.name, ttl, filename=file.original_name)
            if url.startswith("/") and self.settings.public_base_url:
                return urljoin(self.settings.public_base_url, url)
            return url  # host-relative: the API's address (behind the proxy, this one's)

        return url_of

    async def replay(self, connection: Connection, after: int) -> tuple[list[dict[str, Any]], int]:
        """What ``connection`` missed after ``after``, up to what the reader has handed out
        (the rest comes through its queue), and that id: event bodies, or one ``resync`` when
        some of them may be gone (older than EVENTS_RETENTION)."""
        upto = self.cursor
        if after >= upto:
            return [], upto
        oldest = await self._in_thread(self._oldest)
        if oldest is None or after + 1 < oldest:
            return [{"type": "resync", "id": upto, "after": after}], upto
        bodies: list[dict[str, Any]] = []
        owner = None if connection.everyone else connection.holder.user_id
        while True:
            page = await self._in_thread(self._page, after, upto, owner)
            bodies.extend(e.body for e in page if connection.wants(e))
            if len(page) < BATCH:
                return bodies, upto
            after = page[-1].id

    def _oldest(self) -> int | None:
        with self.db.reading() as session:
            return events.oldest_id(session)

    def _page(self, after: int, upto: int, owner: int | None) -> list[events.Event]:
        with self.db.reading() as session:
            return events.read(
                session,
                after,
                upto=upto,
                owner_id=owner,
                limit=BATCH,
                download_url=self.download_url(),
            )

    # -- the doorbell ------------------------------------------------------------------------

    async def _listen_forever(self) -> None:
        while True:
            client = aioredis.Redis.from_url(
                self.settings.redis_url, socket_connect_timeout=1, health_check_interval=10
            )
            try:
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(events.CHANNEL)
                self.doorbell_up = True
                self.ring()  # anything rung while it was away is read now
                async for _message in pubsub.listen():
                    self.ring()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.doorbell_up:
                    log.warning("event doorbell lost (polling meanwhile): %s", exc)
                self.doorbell_up = False
                await asyncio.sleep(1)
            finally:
                with contextlib.suppress(Exception):
                    await client.aclose()

    @staticmethod
    async def _in_thread(function, *args):
        return await to_thread.run_sync(function, *args)


def encode(body: dict[str, Any]) -> str:
    return orjson.dumps(body).decode()
