"""Edges where what the API accepts meets what the database holds, over gunicorn on both
databases: every value at its limits is a 400 (never a 500), names that grow under Unicode
normalisation fit, concurrent tag changes keep a file within its tags, each listing filter is
bound into the cursor, and an admin's key stays a key."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import requests

from tests.accounts import PASSWORD, account, make_admin, register
from tests.conftest import wait_for_status

#: U+FDFA ARABIC LIGATURE SALLALLAHOU ALAYHE WASALLAM: 18 characters once NFKC-normalised.
LONGEST = "\ufdfa"


def upload(user, name: str, data: bytes = b"text", **form) -> dict:
    reply = user.post("/api/v2/files", files={"file": (name, data)}, data=form)
    assert reply.status_code == 201, reply.text
    return reply.json()


@pytest.mark.parametrize(
    "params",
    [
        {"min_size": str(10**20)},
        {"max_size": str(2**63)},
        {"min_size": "-1"},
        {"uploaded_after": "0001-01-01T00:00+01:00"},
        {"uploaded_before": "9999-12-31T23:00-02:00"},
        {"limit": "1001"},
        {"limit": "0"},
        {"q": "x" * 256},
        {"prefix": "x" * 65},
        {"tag": "x" * 201},
        {"content_type": "a/" + "b" * 200},
    ],
    ids=lambda p: f"{next(iter(p))}={next(iter(p.values()))[:24]}",
)
def test_listing_values_beyond_the_columns_are_400(token_api, params):
    alice = account(token_api, "alice")
    reply = alice.get("/api/v2/files", params=params)
    assert reply.status_code == 400, reply.text
    assert reply.json()["code"] in ("VALIDATION_ERROR", "INVALID_LIMIT")
    assert next(iter(params)) in reply.text


def test_listing_values_at_the_columns_edge_answer(token_api):
    alice = account(token_api, "alice")
    upload(alice, "edge.txt")
    for params in (
        {"min_size": "0", "max_size": str(2**63 - 1)},
        {"uploaded_after": "0001-01-01T00:00:00Z", "uploaded_before": "9999-12-31T23:59:59Z"},
    ):
        reply = alice.get("/api/v2/files", params=params)
        assert reply.status_code == 200, reply.text
        assert [f["original_name"] for f in reply.json()["items"]] == ["edge.txt"]


def test_key_ids_beyond_the_column_are_400(token_api):
    alice = account(token_api, "alice")
    for key_id in ("99999999999999999999", str(2**31)):
        reply = alice.delete(f"/api/v2/keys/{key_id}")
        assert reply.status_code == 400, reply.text
        assert reply.json()["code"] == "VALIDATION_ERROR"
    assert alice.delete(f"/api/v2/keys/{2**31 - 1}").status_code == 404


def test_names_that_grow_under_normalisation_fit(token_api):
    """A 255-character file name of U+FDFA is 4590 characters once normalised: upload, search
    and rename answer. A username of it is refused by PRECIS (a compatibility character), an
    address too long once normalised is refused by its bound; neither is a 500."""
    refused = requests.post(
        token_api + "/api/v2/users",
        json={"username": LONGEST * 64, "email": "long@example.com", "password": PASSWORD},
    )
    assert refused.status_code == 400 and "username" in refused.json()["details"]
    too_long = requests.post(
        token_api + "/api/v2/users",
        json={"username": "long", "email": LONGEST * 64 + "@example.com", "password": PASSWORD},
    )
    assert too_long.status_code == 400 and "email" in too_long.json()["details"]
    alice = account(token_api, "alice")
    file = upload(alice, LONGEST * 251 + ".txt")
    found = alice.get("/api/v2/files", params={"q": LONGEST * 3})
    assert [f["name"] for f in found.json()["items"]] == [file["name"]]
    renamed = alice.patch(
        f"/api/v2/files/{file['name']}", json={"original_name": LONGEST * 250 + "x.txt"}
    )
    assert renamed.status_code == 200, renamed.text


@pytest.mark.parametrize("lookalike", ["ALİCE", "alıce", "аlice", "ａｌｉｃｅ", "Alice"])
def test_usernames_that_look_alike_are_one(token_api, lookalike):
    account(token_api, "alice")
    reply = register(token_api, lookalike)
    assert reply.status_code == 409, reply.text
    assert reply.json()["details"] == {"field": "username"}


def race(*calls) -> list[requests.Response]:
    """The calls' replies, each made in a thread of its own, all started at once."""
    replies: list[requests.Response | None] = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def run(index: int) -> None:
        barrier.wait()
        replies[index] = calls[index]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return replies


def test_two_patches_adding_tags_keep_a_file_within_twenty(token_api):
    alice = account(token_api, "alice")
    file = upload(alice, "tagged.txt", tags=",".join(f"t{i}" for i in range(10)))
    path = f"/api/v2/files/{file['name']}"
    replies = race(
        *(
            lambda p=prefix: alice.patch(path, json={"add_tags": [f"{p}{i}" for i in range(10)]})
            for prefix in ("a", "b")
        )
    )
    assert sorted(r.status_code for r in replies) == [200, 400]
    assert len(alice.get(path).json()["tags"]) == 20
    assert alice.patch(path, json={"original_name": "renamed.txt"}).status_code == 200


def test_bulk_tag_racing_a_patch_never_500s(token_api):
    alice = account(token_api, "alice")
    files = [upload(alice, f"f{i}.txt")["name"] for i in range(20)]
    bulk_tag = {"action": "tag", "names": files, "tags": ["shared", "more"]}
    for _ in range(3):
        replies = race(
            lambda: alice.post("/api/v2/files/bulk", json=bulk_tag),
            lambda: alice.patch(
                f"/api/v2/files/{files[7]}", json={"add_tags": ["shared", "other"]}
            ),
        )
        assert [r.status_code for r in replies] == [200, 200], [r.text for r in replies]
        untag = {"action": "untag", "names": files, "tags": ["shared"]}
        assert alice.post("/api/v2/files/bulk", json=untag).status_code == 200
    assert alice.get(f"/api/v2/files/{files[7]}").json()["tags"] == ["more", "other"]


@pytest.mark.parametrize(
    "changed",
    [
        {"prefix": "2"},
        {"content_type": "text/*"},
        {"min_size": "1"},
        {"max_size": "1000"},
        {"uploaded_after": "2000-01-01T00:00:00Z"},
        {"uploaded_before": "2999-01-01T00:00:00Z"},
        {"q": "f"},
        {"tag": "t"},
        {"category": "c"},
        {"status": "stored"},
        {"sort": "size"},
    ],
    ids=lambda p: next(iter(p)),
)
def test_a_cursor_reused_with_any_filter_changed_is_refused(token_api, changed):
    alice = account(token_api, "alice")
    for i in range(3):
        upload(alice, f"f{i}.txt", tags="t", category="c")
    first = alice.get("/api/v2/files", params={"limit": 1})
    cursor = first.json()["next_cursor"]
    assert cursor
    reply = alice.get("/api/v2/files", params={"limit": 1, "cursor": cursor} | changed)
    assert reply.status_code == 400, reply.text
    assert reply.json()["code"] == "INVALID_CURSOR"
    assert alice.get("/api/v2/files", params={"limit": 1, "cursor": cursor}).status_code == 200


def test_an_admin_key_for_files_does_not_manage_accounts(token_api, clean_stack):
    admin = make_admin(clean_stack.db, account(token_api, "root"))
    key = admin.post("/api/v2/keys", json={"name": "reader", "scopes": ["files:read"]})
    assert key.status_code == 201, key.text
    headers = {"Authorization": f"Bearer {key.json()['key']}"}
    body = {"username": "mallory", "email": "m@example.com"}
    v1 = requests.post(token_api + "/api/v1/users", json=body, headers=headers)
    assert v1.status_code == 403 and v1.json()["code"] == "INSUFFICIENT_SCOPE", v1.text
    listed = requests.get(token_api + "/api/v1/users", headers=headers)
    assert [u["username"] for u in listed.json()] == ["root"]
    assert admin.post("/api/v1/users", json=body).status_code == 201  # the admin's own login


def test_headers_of_every_reply_and_of_sensitive_ones(token_api, clean_stack):
    alice = account(token_api, "alice")
    name = upload(alice, "h.txt")["name"]
    wait_for_status(clean_stack.db, name, {"stored"})
    for reply in (
        requests.get(token_api + "/"),
        requests.get(token_api + "/api/v2/files"),  # a 401
        alice.get("/api/v2/files"),
        requests.get(token_api + "/nowhere"),
    ):
        assert reply.headers["X-Content-Type-Options"] == "nosniff"
    for path in ("/api/v2/me", "/api/v2/keys", f"/api/v2/files/{name}/download"):
        reply = alice.get(path)
        assert reply.status_code == 200 and reply.headers["Cache-Control"] == "no-store", path
    docs = requests.get(token_api + "/docs/")
    assert docs.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in docs.headers["Content-Security-Policy"]
    login = requests.post(
        token_api + "/api/v2/auth/token", json={"username": "alice", "password": PASSWORD}
    )
    assert login.status_code == 200 and "Retry-After" not in login.headers


def test_repeatable_parameters_are_capped(token_api):
    alice = account(token_api, "alice")
    upload(alice, "t.txt", tags=",".join(f"t{i}" for i in range(20)))
    twenty = [("tag", f"t{i}") for i in range(20)]
    reply = alice.get("/api/v2/files", params=twenty)
    assert reply.status_code == 200 and len(reply.json()["items"]) == 1
    assert len(alice.get("/api/v2/files", params=twenty[:19]).json()["items"]) == 1
    assert alice.get("/api/v2/files", params=[*twenty[1:], ("tag", "x")]).json()["items"] == []
    reply = alice.get("/api/v2/files", params=[*twenty, ("tag", "t20")])
    assert reply.status_code == 400 and "tag" in reply.json()["details"]
    statuses = [("status", s) for s in ("pending", "stored") * 4]
    assert alice.get("/api/v2/files", params=statuses).status_code == 400


def test_lone_surrogates_in_any_json_body_are_400(token_api):
    alice = account(token_api, "alice")
    name = upload(alice, "s.txt")["name"]
    lone = '"a\\ud800"'
    bodies = [
        ("post", "/api/v2/auth/token", '{"username": LONE, "password": "whatever1"}'),
        ("post", "/api/v2/auth/token", '{"username": "alice", "password": LONE}'),
        (
            "post",
            "/api/v2/users",
            '{"username": LONE, "email": "x@e.com", "password": "whatever1"}',
        ),
        ("post", "/api/v2/keys", '{"name": LONE}'),
        ("patch", f"/api/v2/files/{name}", '{"original_name": LONE}'),
        ("patch", f"/api/v2/files/{name}", '{"add_tags": [LONE]}'),
        ("post", "/api/v2/files/bulk", '{"action": "delete", "names": [LONE]}'),
    ]
    for method, path, body in bodies:
        reply = getattr(alice, method)(
            path,
            data=body.replace("LONE", lone).encode(),
            headers={"Content-Type": "application/json"},
        )
        assert reply.status_code == 400, (path, reply.text)
        assert reply.json()["code"] == "INVALID_JSON"


def test_an_upload_by_a_deleted_accounts_token_is_401(token_api, clean_stack):
    from sqlalchemy import delete

    from common.models import User

    alice = account(token_api, "alice")
    assert alice.get("/api/v2/me").status_code == 200  # its login is cached now
    with clean_stack.db.session() as session:
        session.execute(delete(User).where(User.id == alice.id))
    staging = Path(clean_stack.settings.staging_dir)
    staging.mkdir(parents=True, exist_ok=True)
    before = set(staging.iterdir())
    reply = alice.post("/api/v2/files", files={"file": ("a.txt", b"orphan")})
    assert reply.status_code == 401, reply.text
    assert set(staging.iterdir()) == before  # nothing half-written


def test_deleting_an_account_removes_its_files_and_ends_every_credential(
    token_api, stack_api, clean_stack
):
    """Through the API: the files are deleted through the pipeline (objects removed), never
    handed to open v1; the account's token and key are refused at once; its name is free."""
    from sqlalchemy import delete, select
    from sqlalchemy.exc import IntegrityError

    from common.models import File, User
    from common.storage import from_settings

    alice = account(token_api, "alice")
    names = [upload(alice, f"private{i}.txt")["name"] for i in range(3)]
    for name in names:
        wait_for_status(clean_stack.db, name, {"stored"})
    key = alice.post("/api/v2/keys", json={"name": "k"}).json()["key"]
    by_key = {"Authorization": f"Bearer {key}"}
    assert requests.get(token_api + "/api/v2/files", headers=by_key).status_code == 200
    with clean_stack.db.session() as session, pytest.raises(IntegrityError):
        session.execute(delete(User).where(User.id == alice.id))  # no other way out
    wrong = alice.delete("/api/v2/me", json={"password": "not the password"})
    assert wrong.status_code == 401
    assert alice.delete("/api/v2/me", json={"password": PASSWORD}).status_code == 204
    assert alice.get("/api/v2/me").status_code == 401
    assert requests.get(token_api + "/api/v2/files", headers=by_key).status_code == 401
    assert (
        requests.post(
            token_api + "/api/v2/auth/token", json={"username": "alice", "password": PASSWORD}
        ).status_code
        == 401
    )
    open_listing = requests.get(stack_api + "/files").json()
    assert not {f["filename"] for f in open_listing["files"]} & set(names)
    for name in names:
        assert requests.get(f"{stack_api}/files/{name}/download").status_code == 404
        wait_for_status(clean_stack.db, name, {"deleted"})
    store = from_settings(clean_stack.settings)

    def gone(name: str) -> bool:
        try:
            store.head(name)
        except FileNotFoundError:
            return True
        return False

    from tests.conftest import eventually

    assert eventually(lambda: all(gone(n) for n in names), timeout=20)
    with clean_stack.db.session() as session:
        owners = set(session.scalars(select(File.owner_id).where(File.name.in_(names))))
    assert owners == {alice.id}  # never ownerless
    assert register(token_api, "alice").status_code == 201  # the name is free again


def test_an_admin_deletes_an_account_and_a_key_cannot(token_api, clean_stack):
    root = make_admin(clean_stack.db, account(token_api, "root"))
    bob = account(token_api, "bob")
    key = root.post("/api/v2/keys", json={"name": "k"}).json()["key"]
    by_key = requests.delete(
        token_api + "/api/v2/users/bob", headers={"Authorization": f"Bearer {key}"}
    )
    assert by_key.status_code == 403
    assert bob.delete("/api/v2/users/root").status_code == 403
    assert root.delete("/api/v2/users/bob").status_code == 204
    assert bob.get("/api/v2/me").status_code == 401
    assert root.delete("/api/v2/users/bob").status_code == 404
