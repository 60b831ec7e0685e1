"""Usage is counted as the work happens, in the same transactions, exactly under concurrency,
on both databases: uploads and their bytes, rejections, deletes and downloads a day, and the
running totals by status that ``/api/v2/me`` reads; the operator's check finds no drift."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import event, select, update

from common.files import states, usage
from common.models import File, FileStatus, UsageDay, UsageTotal
from tests import samples
from tests.accounts import account
from tests.conftest import wait_for_status

PARALLEL = 200


def _day(db, user_id: int) -> dict[str, int]:
    with db.session() as session:
        row = session.scalars(select(UsageDay).where(UsageDay.user_id == user_id)).one()
        return {name: getattr(row, name) for name in usage.DAILY}


def _drift(db) -> list:
    with db.reading() as session:  # as the operator's command reads
        return usage.drift(session)


@pytest.mark.slow
def test_parallel_uploads_are_counted_exactly(token_api, clean_stack):
    alice = account(token_api, "alice")
    sizes = [100 + i for i in range(PARALLEL)]

    def upload(size: int) -> str:
        return alice.upload(data=b"a" * (size - 1) + b"\n", name=f"n{size}.txt")

    with ThreadPoolExecutor(16) as pool:
        names = list(pool.map(upload, sizes))
    for name in names:
        wait_for_status(clean_stack.db, name, {"stored"}, timeout=120)
    me = alice.get("/api/v2/me").json()["usage"]
    assert me["files"] == PARALLEL and me["bytes_stored"] == sum(sizes)
    assert me["by_status"]["stored"] == PARALLEL and me["by_status"]["pending"] == 0
    day = _day(clean_stack.db, alice.id)
    assert (day["uploads"], day["upload_bytes"]) == (PARALLEL, sum(sizes))
    assert _drift(clean_stack.db) == []


def test_rejections_deletes_and_downloads_are_counted(token_api, clean_stack):
    bob = account(token_api, "bob")
    spoofed = bob.upload(data=b"not a png at all", name="photo.png")
    kept = bob.upload(data=samples.pdf(), name="report.pdf")
    gone = bob.upload(data=b"short lived\n", name="gone.txt")
    wait_for_status(clean_stack.db, spoofed, {"rejected"})
    for name in (kept, gone):
        wait_for_status(clean_stack.db, name, {"stored"})
    assert bob.get(f"/api/v2/files/{kept}/download").status_code == 200
    assert bob.get(f"/api/v2/files/{kept}/download?redirect=1", allow_redirects=False).ok
    assert bob.delete(f"/api/v2/files/{gone}").status_code == 204
    day = _day(clean_stack.db, bob.id)
    assert {k: day[k] for k in ("uploads", "rejected", "deletes", "downloads", "failed")} == {
        "uploads": 3,
        "rejected": 1,
        "deletes": 1,
        "downloads": 2,
        "failed": 0,
    }
    me = bob.get("/api/v2/me").json()["usage"]
    assert me["by_status"] == {
        "pending": 0,
        "processing": 0,
        "stored": 1,
        "rejected": 1,
        "failed": 0,
    }
    assert me["bytes_stored"] == len(samples.pdf())
    assert _drift(clean_stack.db) == []


def test_the_operator_check_reports_drift(app, clean_stack, token_api):
    carol = account(token_api, "carol")
    name = carol.upload(data=b"counted\n", name="c.txt")
    wait_for_status(clean_stack.db, name, {"stored"})
    checked = app.test_cli_runner().invoke(args=["usage-check"])
    assert checked.exit_code == 0 and json.loads(checked.output) == {"drift": []}
    with clean_stack.db.session() as session:
        session.execute(
            update(UsageTotal)
            .where(UsageTotal.user_id == carol.id, UsageTotal.status == FileStatus.STORED.value)
            .values(files=UsageTotal.files + 5)
        )
    drifted = app.test_cli_runner().invoke(args=["usage-check"])
    assert drifted.exit_code == 1
    assert json.loads(drifted.output)["drift"] == [
        {"user_id": carol.id, "status": "stored", "counted": [6, 8], "actual": [1, 8]}
    ]


def test_the_operator_check_reads_one_moment(clean_stack, token_api):
    """A change committed while the check reads (after its read of the totals, before its read
    of the files) is not taken for drift: both sides come from one snapshot."""
    dave = account(token_api, "dave")
    name = dave.upload(data=b"counted\n", name="d.txt")
    wait_for_status(clean_stack.db, name, {"stored"})
    with clean_stack.db.session() as session:
        file_id = session.scalar(select(File.id).where(File.name == name))
    deleted = threading.Event()

    def delete() -> None:
        with clean_stack.db.session() as session:
            assert states.transition(session, file_id, FileStatus.DELETED)
        deleted.set()

    mover = threading.Thread(target=delete)

    def meanwhile(conn, cursor, statement, parameters, context, executemany):
        if "GROUP BY" in statement and mover.ident is None:  # the check's read of the files
            mover.start()
            deleted.wait(2)  # SQLite: the check's transaction holds the database; it waits

    event.listen(clean_stack.db.engine, "before_cursor_execute", meanwhile)
    try:
        assert _drift(clean_stack.db) == []
    finally:
        event.remove(clean_stack.db.engine, "before_cursor_execute", meanwhile)
    mover.join(30)
    assert deleted.is_set() and _drift(clean_stack.db) == []


def test_the_usage_routes_answer_totals_days_and_pages(token_api, clean_stack):
    from datetime import UTC, datetime, timedelta

    from tests.accounts import make_admin

    dave = account(token_api, "dave")
    name = dave.upload(data=b"one file\n", name="d.txt")
    wait_for_status(clean_stack.db, name, {"stored"})
    today = datetime.now(UTC).date()
    week = {"from": (today - timedelta(days=6)).isoformat(), "to": today.isoformat()}
    mine = dave.get("/api/v2/usage", params=week).json()
    assert mine["totals"]["files"] == 1 and mine["totals"]["bytes_stored"] == 9
    assert [day["date"] for day in mine["daily"]] == [
        (today - timedelta(days=6 - i)).isoformat() for i in range(7)
    ]
    assert mine["daily"][-1]["uploads"] == 1 and mine["daily"][0]["uploads"] == 0
    too_long = {"from": (today - timedelta(days=366)).isoformat(), "to": today.isoformat()}
    assert dave.get("/api/v2/usage", params=too_long).status_code == 400
    backwards = {"from": today.isoformat(), "to": (today - timedelta(days=1)).isoformat()}
    assert dave.get("/api/v2/usage", params=backwards).status_code == 400
    assert dave.get("/api/v2/usage", params={"user": "erin"}).status_code == 403
    assert dave.get("/api/v2/admin/usage").status_code == 403

    root = make_admin(clean_stack.db, account(token_api, "root"))
    for n in range(3):
        account(token_api, f"user{n}")
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = root.get("/api/v2/admin/usage", params=params).json()
        seen += [(item["username"], item["totals"]["files"]) for item in page["items"]]
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
    assert seen == [("dave", 1), ("root", 0), ("user0", 0), ("user1", 0), ("user2", 0)]
    theirs = root.get("/api/v2/usage", params={"user": "dave"}).json()
    assert theirs["totals"]["files"] == 1
    assert root.get("/api/v2/usage", params={"user": "nobody"}).status_code == 404


def _set_quota(db, user_id: int, megabytes: int | None) -> None:
    from common.models import User

    with db.session() as session:
        session.execute(update(User).where(User.id == user_id).values(quota_mb=megabytes))


@pytest.mark.slow
def test_concurrent_uploads_against_room_for_ten_let_exactly_ten_through(
    app, token_api, clean_stack
):
    """The quota of 1 MiB holds ten files of 100 KiB and not an eleventh: twenty racing
    uploads get ten 201s and ten 403s, and the bytes are exact."""
    erin = account(token_api, "erin")
    assert app.test_cli_runner().invoke(args=["users", "set-quota", "erin", "1"]).exit_code == 0
    size = 100 * 1024

    def upload(i: int):
        return erin.post("/api/v2/files", files={"file": (f"f{i}.txt", b"a" * size)})

    with ThreadPoolExecutor(20) as pool:
        replies = list(pool.map(upload, range(20)))
    codes = sorted(reply.status_code for reply in replies)
    assert codes == [201] * 10 + [403] * 10
    refused = next(reply.json() for reply in replies if reply.status_code == 403)
    assert refused["code"] == "QUOTA_EXCEEDED"
    assert refused["details"]["quota"] == 1024 * 1024 and refused["details"]["used"] >= 10 * size
    me = erin.get("/api/v2/me").json()["usage"]
    assert me["files"] == 10
    with clean_stack.db.session() as session:
        from common.models import User

        assert session.get(User, erin.id).used_bytes == 10 * size


def test_a_declared_length_past_the_room_is_refused_before_its_body_and_deletes_free_room(
    token_api, clean_stack
):
    import socket
    from urllib.parse import urlsplit

    frank = account(token_api, "frank")
    _set_quota(clean_stack.db, frank.id, 1)
    first = frank.upload(data=b"a" * (700 * 1024), name="big.txt")
    # A second 700 KiB does not fit: refused on its headers, no body sent at all.
    host, port = urlsplit(token_api).hostname, urlsplit(token_api).port
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(
            b"POST /api/v2/files HTTP/1.1\r\nHost: localhost\r\n"
            + f"Authorization: Bearer {frank.tokens['access_token']}\r\n".encode()
            + b"Content-Type: multipart/form-data; boundary=x\r\n"
            + f"Content-Length: {700 * 1024 + 200}\r\n\r\n".encode()
        )
        answer = b""
        while b"}" not in answer and (chunk := sock.recv(65536)):  # the JSON body's end
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 403") and b"QUOTA_EXCEEDED" in answer
    assert (
        frank.post("/api/v2/files", files={"file": ("b.txt", b"b" * (700 * 1024))}).status_code
        == 403
    )
    wait_for_status(clean_stack.db, first, {"stored"})
    assert frank.delete(f"/api/v2/files/{first}").status_code == 204
    assert frank.upload(data=b"b" * (700 * 1024), name="again.txt")  # the room is back
    assert _drift(clean_stack.db) == []
