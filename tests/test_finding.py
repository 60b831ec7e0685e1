"""Finding files over HTTP against gunicorn on both databases: every filter alone and together,
search in any script and case, paging under every sort while files come and go, cursors bound
to their listing, tags and categories, renames, bulk actions."""

from __future__ import annotations

import pytest
import requests

from tests.accounts import account
from tests.conftest import wait_for_status
from tests.samples import pdf, png


def upload(user, name: str, data: bytes = b"text", **form) -> dict:
    reply = user.post("/api/v2/files", files={"file": (name, data)}, data=form)
    assert reply.status_code == 201, reply.text
    return reply.json()


def names(user, **params) -> list[str]:
    """Original names of every file a listing gives, following cursors."""
    found, cursor = [], None
    while True:
        page = user.get("/api/v2/files", params=params | ({"cursor": cursor} if cursor else {}))
        assert page.status_code == 200, page.text
        found += [f["original_name"] for f in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return found


@pytest.fixture
def library(token_api, clean_stack):
    """alice's files (and bob's, which she must never see)."""
    alice, bob = account(token_api, "alice"), account(token_api, "bob")
    files = {
        "report": upload(
            alice, "Отчёт за МАЙ.txt", b"a" * 10, tags="Work,Финансы", category="Docs"
        ),
        "greek": upload(alice, "ΣΗΜΕΙΩΣΕΙΣ.txt", b"b" * 20, tags="work"),
        "mixed": upload(alice, "MiXeD Case.PDF", pdf(), tags="ARCHIVE"),
        "percent": upload(alice, "100% done_v2.txt", b"c" * 30, category="docs"),
        "photo": upload(alice, "holiday.png", png(), tags="photos,work", category="Pictures"),
        "fake": upload(alice, "fake.png", b"<html></html>"),
    }
    upload(bob, "Отчёт bob.txt", b"x", tags="work")
    for key, file in files.items():
        wait_for_status(clean_stack.db, file["name"], {"rejected" if key == "fake" else "stored"})
    return alice, bob, files


def test_each_filter_alone_and_together(library):
    alice, _bob, _files = library
    assert set(names(alice, q="ОТЧЁТ")) == {"Отчёт за МАЙ.txt"}  # Cyrillic, any case
    assert set(names(alice, q="май")) == {"Отчёт за МАЙ.txt"}
    assert set(names(alice, q="σημειώσεις".replace("ώ", "ω"))) == {"ΣΗΜΕΙΩΣΕΙΣ.txt"}  # Greek
    assert set(names(alice, q="mixed case")) == {"MiXeD Case.PDF"}
    assert set(names(alice, q="100%")) == {"100% done_v2.txt"}  # % is a character
    assert set(names(alice, q="_v")) == {"100% done_v2.txt"}  # so is _
    assert names(alice, q="%") == ["100% done_v2.txt"]
    assert set(names(alice, tag="WORK")) == {"Отчёт за МАЙ.txt", "ΣΗΜΕΙΩΣΕΙΣ.txt", "holiday.png"}
    assert set(names(alice, tag=["work", "финансы"])) == {"Отчёт за МАЙ.txt"}  # all of them
    assert names(alice, tag=["work", "archive"]) == []
    assert set(names(alice, category="DOCS")) == {"Отчёт за МАЙ.txt", "100% done_v2.txt"}
    assert set(names(alice, status="rejected")) == {"fake.png"}
    assert len(names(alice, status="stored")) == 5
    assert len(names(alice, status=["stored", "rejected"])) == 6
    assert names(alice, status="pending") == []
    # A rejected file's type is the one its bytes showed (fake.png: text/html).
    assert set(names(alice, content_type="image/*")) == {"holiday.png"}
    assert set(names(alice, content_type="application/pdf")) == {"MiXeD Case.PDF"}
    assert set(names(alice, min_size=20, max_size=30)) == {"ΣΗΜΕΙΩΣΕΙΣ.txt", "100% done_v2.txt"}
    assert set(names(alice, q="о", tag="work", max_size=15)) == {"Отчёт за МАЙ.txt"}
    assert set(names(alice, prefix="2")) == set(names(alice))  # stored names start with a date
    assert names(alice, prefix="Z") == []
    assert names(alice, uploaded_after="2999-01-01") == []
    assert len(names(alice, uploaded_before="2999-01-01T00:00:00+03:00")) == 6
    # bob's files never show, whatever the filter.
    assert "Отчёт bob.txt" not in names(alice, q="отчёт") + names(alice, tag="work")


def test_content_type_families(library):
    alice, _bob, _files = library
    assert set(names(alice, content_type="image/*", status="stored")) == {"holiday.png"}
    assert set(names(alice, content_type="text/*")) == {
        "Отчёт за МАЙ.txt",
        "ΣΗΜΕΙΩΣΕΙΣ.txt",
        "100% done_v2.txt",
        "fake.png",
    }
    assert names(alice, content_type="text/html") == ["fake.png"]
    assert names(alice, content_type="image/png", status="stored") == ["holiday.png"]


def test_paging_under_every_sort_visits_each_file_once_in_order(token_api, clean_stack):
    alice = account(token_api, "alice")
    made = [
        upload(alice, f"{'ZYXWVUTSRQPONMLKJIHGFEDCBA'[i % 26]}{i:02}.txt", b"x" * (i % 5 + 1))
        for i in range(25)
    ]
    for sort in ("uploaded_at", "name", "original_name", "size"):
        for descending in (False, True):
            key = f"-{sort}" if descending else sort
            expected = sorted(
                made,
                key=lambda f, s=sort: (
                    (f[s], made.index(f)) if s != "uploaded_at" else made.index(f)
                ),
                reverse=descending,
            )
            got, cursor = [], None
            while True:
                params = {"limit": 7, "sort": key} | ({"cursor": cursor} if cursor else {})
                page = alice.get("/api/v2/files", params=params).json()
                got += page["items"]
                cursor = page["next_cursor"]
                if cursor is None:
                    break
            assert len(got) == 25 and len({f["name"] for f in got}) == 25, key
            values = [f[sort] for f in got]
            assert values == sorted(values, reverse=descending), key
            if sort != "size":  # sizes tie: their order is the (hidden) id's
                assert [f["name"] for f in got] == [f["name"] for f in expected], key


def test_paging_by_size_while_files_come_and_go(token_api):
    alice = account(token_api, "alice")
    steady = [upload(alice, f"s{i}.txt", b"x" * (i + 1))["name"] for i in range(12)]
    first = alice.get("/api/v2/files", params={"limit": 4, "sort": "size"}).json()
    seen = [f["name"] for f in first["items"]]
    upload(alice, "small.txt", b"")  # sorts before the page already seen: never listed now
    big = upload(alice, "big.txt", b"x" * 100)["name"]  # after the rest: listed at the end
    assert alice.delete(f"/api/v2/files/{seen[1]}").status_code == 204
    cursor = first["next_cursor"]
    while cursor:
        page = alice.get("/api/v2/files", params={"limit": 4, "sort": "size", "cursor": cursor})
        seen += [f["name"] for f in page.json()["items"]]
        cursor = page.json()["next_cursor"]
    assert seen == [*steady, big]


def test_a_cursor_is_bound_to_its_filters(library):
    alice, bob, _files = library
    cursor = alice.get("/api/v2/files", params={"limit": 1, "tag": "work"}).json()["next_cursor"]
    assert alice.get("/api/v2/files", params={"limit": 1, "tag": "WORK", "cursor": cursor}).ok
    for params in (
        {"tag": "photos"},
        {"tag": "work", "q": "o"},
        {"tag": "work", "status": "stored"},
        {"tag": "work", "sort": "size"},
        {},
    ):
        reply = alice.get("/api/v2/files", params=params | {"limit": 1, "cursor": cursor})
        assert reply.status_code == 400 and reply.json()["code"] == "INVALID_CURSOR", params
    foreign = bob.get("/api/v2/files", params={"limit": 1, "tag": "work", "cursor": cursor})
    assert foreign.status_code == 400


def test_malformed_filters_are_named(library):
    alice, _bob, _files = library
    for params, field in (
        ({"tag": "two words"}, "INVALID_TAG"),
        ({"tag": "x" * 51}, "INVALID_TAG"),
        ({"content_type": "image"}, "content_type"),
        ({"min_size": "-1"}, "min_size"),
        ({"uploaded_after": "yesterday"}, "uploaded_after"),
        ({"status": "gone"}, "status"),
        ({"sort": "-owner"}, "sort"),
        ({"q": ""}, "q"),
        ({"tags": "work"}, "UNKNOWN_PARAMETER"),
    ):
        reply = alice.get("/api/v2/files", params=params)
        assert reply.status_code == 400, params
        assert field in reply.text, (params, reply.text)


def test_tags_and_categories_are_normalised_and_counted(library):
    alice, bob, files = library
    tags = alice.get("/api/v2/tags").json()["items"]
    assert tags == [
        {"name": "archive", "count": 1},
        {"name": "photos", "count": 1},
        {"name": "work", "count": 3},
        {"name": "финансы", "count": 1},
    ]
    categories = alice.get("/api/v2/categories").json()["items"]
    assert categories == [{"name": "docs", "count": 2}, {"name": "pictures", "count": 1}]
    assert bob.get("/api/v2/tags").json()["items"] == [{"name": "work", "count": 1}]
    assert files["report"]["tags"] == ["work", "финансы"] and files["report"]["category"] == "docs"
    full_width = upload(alice, "w.txt", tags="ＷＯＲＫ, Ａrchive ,work")
    assert full_width["tags"] == ["archive", "work"]
    for bad in ("has space", "slash/no", "x" * 51, ",".join(f"t{i}" for i in range(21))):
        reply = alice.post("/api/v2/files", files={"file": ("b.txt", b"b")}, data={"tags": bad})
        assert reply.status_code == 400 and reply.json()["code"] == "INVALID_TAG", bad
    assert len(names(alice, q="b.txt")) == 0  # refused uploads left nothing


def test_patch_renames_and_relabels(library):
    alice, bob, files = library
    photo = files["photo"]["name"]
    reply = alice.patch(
        f"/api/v2/files/{photo}",
        json={"original_name": "Море 2024.png", "remove_tags": ["WORK"], "add_tags": ["sea"]},
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["original_name"] == "Море 2024.png" and body["tags"] == ["photos", "sea"]
    assert body["category"] == "pictures"
    assert names(alice, q="море") == ["Море 2024.png"]
    download = alice.get(f"/api/v2/files/{photo}/download").json()["download_url"]
    disposition = requests.get(download).headers["Content-Disposition"]
    assert "filename*=UTF-8''%D0%9C%D0%BE%D1%80%D0%B5%202024.png" in disposition
    cleared = alice.patch(f"/api/v2/files/{photo}", json={"category": None, "tags": []}).json()
    assert cleared["category"] is None and cleared["tags"] == []
    assert alice.patch(f"/api/v2/files/{photo}", json={"original_name": "x.exe"}).status_code == 400
    empty = alice.patch(f"/api/v2/files/{photo}", json={"original_name": ""})
    assert empty.status_code == 400, empty.text  # in a string's words, not a sequence's
    assert empty.json()["details"] == {"original_name": "String should have at least 1 character"}
    assert alice.patch(f"/api/v2/files/{photo}", json={"tags": ["bad tag"]}).status_code == 400
    assert alice.get(f"/api/v2/files/{photo}").json()["original_name"] == "Море 2024.png"
    theirs = bob.patch(f"/api/v2/files/{photo}", json={"category": "mine"})
    assert theirs.status_code == 404 and theirs.json()["code"] == "FILE_NOT_FOUND"


def test_bulk_with_own_foreign_and_missing_names(library, clean_stack):
    alice, bob, files = library
    bobs = bob.get("/api/v2/files").json()["items"][0]["name"]
    own = [files["report"]["name"], files["greek"]["name"]]
    batch = [*own, bobs, "20260101_000000_0123456789abcdef.txt", "../etc/passwd"]
    tagged = alice.post(
        "/api/v2/files/bulk", json={"action": "tag", "names": batch, "tags": ["Q3"]}
    )
    assert tagged.status_code == 200
    assert tagged.json() == {
        "results": [
            {"name": own[0], "ok": True},
            {"name": own[1], "ok": True},
            {"name": bobs, "ok": False, "code": "FILE_NOT_FOUND"},
            {"name": batch[3], "ok": False, "code": "FILE_NOT_FOUND"},
            {"name": batch[4], "ok": False, "code": "FILE_NOT_FOUND"},
        ],
        "succeeded": 2,
        "failed": 3,
    }
    assert set(names(alice, tag="q3")) == {"Отчёт за МАЙ.txt", "ΣΗΜΕΙΩΣΕΙΣ.txt"}
    assert bob.get(f"/api/v2/files/{bobs}").json()["tags"] == ["work"]
    moved = alice.post(
        "/api/v2/files/bulk", json={"action": "set_category", "names": own, "category": "Q"}
    )
    assert moved.json()["succeeded"] == 2 and set(names(alice, category="q")) == {
        "Отчёт за МАЙ.txt",
        "ΣΗΜΕΙΩΣΕΙΣ.txt",
    }
    untagged = alice.post(
        "/api/v2/files/bulk", json={"action": "untag", "names": own, "tags": ["q3"]}
    )
    assert untagged.json()["succeeded"] == 2 and names(alice, tag="q3") == []
    deleted = alice.post("/api/v2/files/bulk", json={"action": "delete", "names": [*own, bobs]})
    assert [r["ok"] for r in deleted.json()["results"]] == [True, True, False]
    for name in own:
        assert alice.get(f"/api/v2/files/{name}").status_code == 404
        wait_for_status(clean_stack.db, name, {"deleted"})
    assert bob.get(f"/api/v2/files/{bobs}").status_code == 200
    for body in (
        {"action": "explode", "names": own},
        {"action": "delete", "names": []},
        {"action": "delete", "names": ["x"] * 1001},
        {"action": "tag", "names": own},
        {"action": "tag", "names": own, "tags": ["bad tag"]},
    ):
        assert alice.post("/api/v2/files/bulk", json=body).status_code == 400, body
