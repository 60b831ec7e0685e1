"""Live status over real sockets: gunicorn (the API), the realtime process under uvicorn and a
worker, with WebSocket and SSE clients as programs use them. Events arrive in order and only
to their owner, replay after a reconnect gives exactly what was missed, an id handed out before
a slower transaction commits is not skipped, a commit that never rings is delivered by the
poll, and bad credentials are refused."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator

import pytest
import requests
from sqlalchemy import delete, select, text

from common.files import states
from common.models import File, FileEvent, OutboxEntry
from testkit.live import SseClient, WsClient, collect
from testkit.processes import Server, start_realtime
from tests.accounts import account, make_admin
from tests.conftest import eventually, wait_for_status

STATUS_TYPES = ("file.pending", "file.processing", "file.stored")


@pytest.fixture(scope="session")
def realtime_server(stack, tmp_path_factory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("realtime") / "uvicorn.log"
    server = start_realtime(stack.settings, log)
    yield server
    server.stop()
    served = log.read_text().split("Shutting down")[0]  # (open sockets cancelled at the end)
    assert "Traceback" not in served, served  # nothing failed while it served


@pytest.fixture
def realtime(realtime_server, token_api) -> str:
    return realtime_server.url


def _ws(url: str) -> str:
    return "ws" + url.removeprefix("http") + "/api/v2/ws"


def _stored(name: str):
    return lambda event: event["type"] == "file.stored" and event["file"]["name"] == name


def _done(db, name: str) -> None:
    """``name`` stored and its metadata extracted: no more events of the worker's to come."""
    file = wait_for_status(db, name, {"stored"})

    def quiet() -> bool:
        with db.session() as session:
            return (
                session.scalar(select(OutboxEntry.id).where(OutboxEntry.file_id == file.id)) is None
            )

    assert eventually(quiet, timeout=30)


def _statuses(events: list[dict], name: str) -> list[str]:
    return [e["type"] for e in events if e["file"]["name"] == name and e["type"] in STATUS_TYPES]


def test_discovery_names_the_realtime_routes(token_api):
    reply = requests.get(token_api + "/api/v2")
    assert reply.status_code == 200
    assert reply.json() == {
        "version": "2",
        "events_url": token_api + "/api/v2/events",
        "ws_url": _ws(token_api),
        "upload_part_size": 8 * 1024 * 1024,
        "max_upload_size": 16 * 1024 * 1024,
        "registration": "open",
    }


def test_websocket_and_sse_clients_see_an_upload_pending_processing_stored(
    realtime, token_api, clean_stack
):
    alice = account(token_api, "alice")
    socket = WsClient(_ws(realtime), alice.auth)
    stream = SseClient(realtime + "/api/v2/events", alice.auth)
    try:
        assert stream.status == 200
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        ready = socket.next()
        assert ready["type"] == "ready" and ready["user"] == "alice"
        name = alice.upload(data=b"live\n", name="live.txt")
        for client in (socket, stream):
            events = collect(client, _stored(name))
            assert _statuses(events, name) == list(STATUS_TYPES)
            ids = [e["id"] for e in events]
            assert ids == sorted(ids) and len(set(ids)) == len(ids)
            stored = events[-1]
            assert stored["file"]["status"] == "stored" and stored["file"]["owner"] == "alice"
            assert stored["file"]["download_url"] and stored["at"].endswith("Z")
        assert [e["_id"] for e in events] == [str(e["id"]) for e in events]  # SSE id: = id
    finally:
        socket.close()
        stream.close()


def test_a_user_sees_only_their_own_events_and_an_admin_may_see_all(
    realtime, token_api, clean_stack
):
    alice, bob = account(token_api, "alice"), account(token_api, "bob")
    admin = make_admin(clean_stack.db, account(token_api, "root"))
    alice_ws, bob_ws = WsClient(_ws(realtime), alice.auth), WsClient(_ws(realtime), bob.auth)
    everyone = SseClient(realtime + "/api/v2/events?all=1", admin.auth)
    try:
        assert SseClient(realtime + "/api/v2/events?all=1", bob.auth).status == 403
        for socket in (alice_ws, bob_ws):
            assert socket.next()["type"] == "ready"
        name = alice.upload(data=b"alice's\n", name="mine.txt")
        assert _statuses(collect(alice_ws, _stored(name)), name) == list(STATUS_TYPES)
        assert _statuses(collect(everyone, _stored(name)), name) == list(STATUS_TYPES)
        theirs = bob.upload(data=b"bob's\n", name="his.txt")
        seen_by_bob = collect(bob_ws, _stored(theirs))
        assert {e["file"]["owner"] for e in seen_by_bob} == {"bob"}
        assert name not in {e["file"]["name"] for e in seen_by_bob}
    finally:
        for client in (alice_ws, bob_ws, everyone):
            client.close()


def test_sse_reconnect_with_last_event_id_replays_exactly_what_was_missed(
    realtime, token_api, clean_stack
):
    alice = account(token_api, "alice")
    name = alice.upload(data=b"replayed\n", name="replay.txt")
    _done(clean_stack.db, name)
    stream = SseClient(realtime + "/api/v2/events", alice.auth)
    alice.patch(f"/api/v2/files/{name}", json={"tags": ["one"]})
    last = collect(stream, lambda e: e["type"] == "file.labels")[-1]
    stream.close()
    # Three changes while disconnected.
    assert alice.patch(f"/api/v2/files/{name}", json={"tags": ["two"]}).status_code == 200
    renamed = alice.patch(f"/api/v2/files/{name}", json={"original_name": "replayed2.txt"})
    assert renamed.status_code == 200, renamed.text
    assert alice.delete(f"/api/v2/files/{name}").status_code == 204
    again = SseClient(realtime + "/api/v2/events", alice.auth | {"Last-Event-ID": last["_id"]})
    try:
        events = collect(again, lambda e: e["type"] == "file.deleted")
        assert [e["type"] for e in events] == ["file.labels", "file.renamed", "file.deleted"]
        assert all(e["id"] > last["id"] for e in events)
        with pytest.raises(queue.Empty):  # nothing more
            again.next(timeout=1.5)
    finally:
        again.close()
    # What is older than EVENTS_RETENTION is pruned: a client asking after it gets a resync.
    with clean_stack.db.session() as session:
        session.execute(delete(FileEvent).where(FileEvent.id <= last["id"]))
    late = SseClient(
        realtime + "/api/v2/events", alice.auth | {"Last-Event-ID": str(last["id"] - 1)}
    )
    try:
        resync = late.next()
        assert resync["type"] == "resync" and resync["_id"] == str(resync["id"])
        assert resync["id"] >= events[-1]["id"]
        with pytest.raises(queue.Empty):  # and nothing else: the client refetches by REST
            late.next(timeout=1.5)
    finally:
        late.close()


def test_websocket_resume_and_subscribe(realtime, token_api, clean_stack):
    alice = account(token_api, "alice")
    zero = alice.upload(data=b"zero\n", name="zero.txt")
    _done(clean_stack.db, zero)
    watching = WsClient(_ws(realtime), alice.auth)
    assert watching.next()["type"] == "ready"
    alice.patch(f"/api/v2/files/{zero}", json={"tags": ["z"]})
    before = collect(watching, lambda e: e["type"] == "file.labels")[-1]["id"]  # the last seen
    watching.close()
    first = alice.upload(data=b"first\n", name="first.txt")
    second = alice.upload(data=b"second\n", name="second.txt")
    for name in (first, second):
        _done(clean_stack.db, name)
    socket = WsClient(_ws(realtime), alice.auth)
    try:
        assert socket.next()["type"] == "ready"
        socket.send({"type": "subscribe", "names": [second]})
        socket.send({"type": "resume", "after": before})
        replayed = collect(socket, _stored(second))
        assert {e["file"]["name"] for e in replayed} == {second}
        assert _statuses(replayed, second) == list(STATUS_TYPES)
        alice.patch(f"/api/v2/files/{first}", json={"tags": ["x"]})
        alice.patch(f"/api/v2/files/{second}", json={"tags": ["y"]})
        events = collect(socket, lambda e: e["type"] == "file.labels")
        assert {e["file"]["name"] for e in events} == {second}  # first's change left out
    finally:
        socket.close()


def test_a_commit_that_never_rings_is_delivered_by_the_poll(realtime, token_api, clean_stack):
    alice = account(token_api, "alice")
    name = alice.upload(data=b"quiet\n", name="quiet.txt")
    wait_for_status(clean_stack.db, name, {"stored"})
    socket = WsClient(_ws(realtime), alice.auth)
    try:
        assert socket.next()["type"] == "ready"
        # This test's database handle has no doorbell: as a process that died after its commit.
        with clean_stack.db.session() as session:
            file_id = session.scalar(select(File.id).where(File.name == name))
            states.change(session, file_id, "renamed", original_name="quiet-renamed.txt")
        started = time.monotonic()
        event = collect(socket, lambda e: e["type"] == "file.renamed", timeout=10)[-1]
        assert time.monotonic() - started < 3  # the poll: at most a second, plus the reading
        assert event["file"]["original_name"] == "quiet-renamed.txt"
    finally:
        socket.close()


@pytest.mark.parametrize("stack", ["postgres-s3"], indirect=True)
def test_transactions_committing_against_the_order_of_their_ids_are_both_delivered(
    realtime, token_api, clean_stack
):
    """PostgreSQL only: SQLite lets one writer at a time, so its ids commit in order."""
    alice = account(token_api, "alice")
    names = [alice.upload(data=f"{i}\n".encode(), name=f"o{i}.txt") for i in range(2)]
    for name in names:
        wait_for_status(clean_stack.db, name, {"stored"})
    with clean_stack.db.session() as session:
        ids = dict(session.execute(select(File.name, File.id).where(File.name.in_(names))).all())
    socket = WsClient(_ws(realtime), alice.auth)
    try:
        assert socket.next()["type"] == "ready"
        slow = clean_stack.db._factory()
        states.change(slow, ids[names[0]], "renamed", original_name="first-id.txt")
        slow.flush()  # its event's id is handed out, not committed
        with clean_stack.db.session() as fast:
            states.change(fast, ids[names[1]], "renamed", original_name="second-id.txt")
        time.sleep(1.5)  # the reader has seen the higher id by now
        slow.commit()
        slow.close()
        events = collect(
            socket, lambda e: e["type"] == "file.renamed" and e["file"]["name"] == names[1]
        )
        got = [(e["file"]["name"], e["id"]) for e in events if e["type"] == "file.renamed"]
        assert [name for name, _ in got] == names  # both, in the order of their ids
        assert got[0][1] < got[1][1]
    finally:
        socket.close()


def test_bad_credentials_are_refused(realtime, token_api, clean_stack):
    alice = account(token_api, "alice")
    bad = {"Authorization": "Bearer not.a.token"}
    stream = SseClient(realtime + "/api/v2/events", bad)
    assert stream.status == 401
    assert stream.json()["code"] == "UNAUTHORIZED"
    assert "invalid_token" in stream.headers["WWW-Authenticate"]
    assert SseClient(realtime + "/api/v2/events").status == 401
    assert WsClient(_ws(realtime), bad).closed_with() == 4401
    silent = WsClient(_ws(realtime))  # no auth message within 5 s
    started = time.monotonic()
    assert silent.closed_with(timeout=15) == 4401
    assert 4 < time.monotonic() - started < 10
    late = WsClient(_ws(realtime))
    late.send({"type": "auth", "token": alice.tokens["access_token"]})
    assert late.next()["type"] == "ready"
    late.close()
    key = alice.post("/api/v2/keys", json={"name": "writer", "scopes": ["files:write"]}).json()
    writer = SseClient(realtime + "/api/v2/events", {"Authorization": f"Bearer {key['key']}"})
    assert writer.status == 403 and writer.json()["code"] == "INSUFFICIENT_SCOPE"


def test_a_ticket_works_once(realtime, token_api, clean_stack):
    alice = account(token_api, "alice")
    reply = alice.post("/api/v2/events/ticket")
    assert reply.status_code == 200 and reply.json()["expires_in"] == 60
    ticket = reply.json()["ticket"]
    stream = SseClient(f"{realtime}/api/v2/events?ticket={ticket}")
    assert stream.status == 200
    stream.close()
    again = SseClient(f"{realtime}/api/v2/events?ticket={ticket}")
    assert again.status == 401
    assert requests.post(token_api + "/api/v2/events/ticket").status_code == 401


@pytest.mark.slow
def test_a_revoked_token_closes_its_socket_within_a_minute(realtime, token_api, clean_stack):
    alice = account(token_api, "alice")
    socket = WsClient(_ws(realtime), alice.auth)
    try:
        assert socket.next()["type"] == "ready"
        assert alice.delete("/api/v2/auth/token").status_code == 204
        started = time.monotonic()
        assert socket.closed_with(timeout=70) == 4401
        assert time.monotonic() - started < 60
    finally:
        socket.close()


def test_events_are_delivered_after_the_ids_went_back(realtime, token_api, clean_stack):
    """A database restored from a backup, or emptied with its sequence restarted: the ids of
    new events start below what the reader has seen, and still reach clients."""
    alice = account(token_api, "alice")
    socket = WsClient(_ws(realtime), alice.auth)
    try:
        assert socket.next()["type"] == "ready"
        name = alice.upload(data=b"before\n", name="before.txt")
        _done(clean_stack.db, name)
        seen = collect(socket, _stored(name), timeout=30)  # this socket got ids above 1
        assert seen[-1]["id"] > 1
        with clean_stack.db.session() as session:
            if session.get_bind().dialect.name == "postgresql":
                session.execute(text("TRUNCATE file_events RESTART IDENTITY"))
            else:
                session.execute(text("DELETE FROM file_events"))
                session.execute(text("DELETE FROM sqlite_sequence WHERE name = 'file_events'"))
        time.sleep(1.5)  # the reader notices on its next idle poll
        with clean_stack.db.session() as session:
            file_id = session.scalar(select(File.id).where(File.name == name))
            states.change(session, file_id, "renamed", original_name="after.txt")
        event = collect(socket, lambda e: e["type"] == "file.renamed", timeout=10)[-1]
        assert event["id"] == 1 and event["file"]["original_name"] == "after.txt"
    finally:
        socket.close()


def test_a_client_that_leaves_is_let_go_at_once(realtime, token_api, clean_stack):
    """Its connection is gone from the process when it closes, not at the next ping."""
    alice = account(token_api, "alice")

    def connections() -> int:
        return requests.get(realtime + "/healthz").json()["connections"]

    sockets = [WsClient(_ws(realtime), alice.auth) for _ in range(3)]
    stream = SseClient(realtime + "/api/v2/events", alice.auth)
    for socket in sockets:
        assert socket.next()["type"] == "ready"
    assert connections() == 4
    for socket in sockets:
        socket.close()
    stream.close()
    assert eventually(lambda: connections() == 0, timeout=5)
