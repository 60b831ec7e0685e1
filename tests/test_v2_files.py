"""v2 file routes over HTTP against gunicorn on both databases: upload, keyset pages, cursors,
download (and its redirect), delete."""

from __future__ import annotations

import requests

from tests.accounts import account
from tests.conftest import wait_for_status
from tests.samples import png

PNG = png()


def _pages(user, **params) -> tuple[list[str], list[requests.Response]]:
    """Every page of a listing, following next_cursor; the names in order, and the replies."""
    names, replies, cursor = [], [], None
    while True:
        reply = user.get("/api/v2/files", params=params | ({"cursor": cursor} if cursor else {}))
        assert reply.status_code == 200, reply.text
        replies.append(reply)
        body = reply.json()
        names += [f["name"] for f in body["items"]]
        cursor = body["next_cursor"]
        assert body["has_more"] == (cursor is not None)
        if cursor is None:
            return names, replies


def test_upload_and_read_back(token_api, clean_stack):
    alice = account(token_api, "alice")
    reply = alice.post(
        "/api/v2/files", files={"file": ("отчёт.png", PNG)}, headers={"Prefer": "wait=10"}
    )
    assert reply.status_code == 201, reply.text
    body = reply.json()
    assert body["status"] == "stored" and body["owner"] == "alice"
    assert body["original_name"] == "отчёт.png" and body["tags"] == [] and body["category"] is None
    assert body["uploaded_at"].endswith("Z") and body["download_url"]
    assert reply.headers["Location"] == f"{token_api}/api/v2/files/{body['name']}"
    assert reply.headers["Preference-Applied"] == "wait=10"
    info = alice.get(f"/api/v2/files/{body['name']}").json()
    fields = ("name", "owner", "status", "original_name", "sha256", "uploaded_at", "tags")
    assert {k: info[k] for k in fields} == {k: body[k] for k in fields}
    download = alice.get(f"/api/v2/files/{body['name']}/download").json()
    assert requests.get(download["download_url"]).content == PNG
    assert download["file_info"]["owner"] == "alice" and download["expires_in"] == 300
    moved = alice.get(f"/api/v2/files/{body['name']}/download?redirect=1", allow_redirects=False)
    assert moved.status_code == 302 and requests.get(moved.headers["Location"]).content == PNG
    rejected = alice.post(
        "/api/v2/files", files={"file": ("x.png", b"<html>")}, headers={"Prefer": "wait=10"}
    )
    assert rejected.status_code == 422 and rejected.json()["code"] == "FILE_REJECTED"
    refused = alice.post("/api/v2/files", files={"file": ("x.exe", b"MZ")})
    assert refused.status_code == 415 and refused.json()["code"] == "EXTENSION_NOT_ALLOWED"
    assert alice.post("/api/v2/files", data={"x": "1"}).json()["code"] in {
        "NOT_MULTIPART",
        "NO_FILE",
    }


def test_download_of_a_file_not_stored_yet_is_409(token_api, clean_stack):
    alice = account(token_api, "alice")
    name = alice.upload(data=b"<html>", name="x.png")
    wait_for_status(clean_stack.db, name, {"rejected"})
    reply = alice.get(f"/api/v2/files/{name}/download")
    assert reply.status_code == 409 and reply.json()["status"] == "rejected"


def test_paging_visits_every_file_once_in_order(token_api, clean_stack):
    alice = account(token_api, "alice")
    bob = account(token_api, "bob")
    uploaded = [alice.upload(data=f"file {i}".encode(), name=f"f{i:02}.txt") for i in range(25)]
    bob.upload()
    names, replies = _pages(alice, limit=7)
    assert names == list(reversed(uploaded))  # newest first
    assert [len(r.json()["items"]) for r in replies] == [7, 7, 7, 4]
    link = replies[0].headers["Link"]
    assert link.endswith('>; rel="next"') and "limit=7" in link
    followed = requests.get(link[1 : link.index(">")], headers=alice.auth).json()["items"]
    assert [f["name"] for f in followed] == [f["name"] for f in replies[1].json()["items"]]
    assert "Link" not in replies[-1].headers
    for sort in ("name", "-name", "size", "-size", "original_name", "uploaded_at"):
        names, _ = _pages(alice, limit=7, sort=sort)
        assert sorted(names) == sorted(uploaded), sort
        assert len(names) == 25


def test_paging_while_files_come_and_go(token_api, clean_stack):
    """Rows inserted or deleted between pages neither repeat nor hide rows there all along."""
    alice = account(token_api, "alice")
    steady = [alice.upload(name=f"s{i}.txt") for i in range(14)]
    first = alice.get("/api/v2/files", params={"limit": 5}).json()
    seen = [f["name"] for f in first["items"]]
    gone = alice.upload(name="new.txt")  # newer than every page left: never listed now
    alice.delete(f"/api/v2/files/{seen[0]}")  # already seen
    cursor = first["next_cursor"]
    while cursor:
        page = alice.get("/api/v2/files", params={"limit": 5, "cursor": cursor}).json()
        seen += [f["name"] for f in page["items"]]
        cursor = page["next_cursor"]
    assert seen == list(reversed(steady)) and gone not in seen


def test_cursor_abuse_is_400(token_api, clean_stack):
    alice = account(token_api, "alice")
    bob = account(token_api, "bob")
    for i in range(3):
        alice.upload(name=f"{i}.txt")
        bob.upload(name=f"{i}.txt")
    cursor = alice.get("/api/v2/files", params={"limit": 1}).json()["next_cursor"]
    tampered = cursor[:-3] + ("AAA" if not cursor.endswith("AAA") else "BBB")
    for user, params in (
        (alice, {"limit": 1, "cursor": tampered}),
        (alice, {"limit": 1, "cursor": "garbage"}),
        (alice, {"limit": 1, "cursor": cursor, "sort": "name"}),  # reused with another sort
        (bob, {"limit": 1, "cursor": cursor}),  # another caller's
    ):
        reply = user.get("/api/v2/files", params=params)
        assert reply.status_code == 400, params
        assert reply.json()["code"] == "INVALID_CURSOR"
    ok = alice.get("/api/v2/files", params={"limit": 5, "cursor": cursor})  # limit may change
    assert ok.status_code == 200 and len(ok.json()["items"]) == 2


def test_unknown_and_malformed_parameters_are_named(token_api):
    alice = account(token_api, "alice")
    typo = alice.get("/api/v2/files", params={"limt": 5})
    assert typo.status_code == 400 and typo.json()["code"] == "UNKNOWN_PARAMETER"
    assert typo.json()["details"] == {"unknown": ["limt"]}
    for params in ({"limit": 0}, {"limit": 1001}, {"limit": "x"}, {"sort": "owner"}):
        reply = alice.get("/api/v2/files", params=params)
        assert reply.status_code == 400, params
        assert next(iter(params)) in reply.text
