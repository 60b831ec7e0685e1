"""Who may reach which file, over HTTP against gunicorn on both databases: two users who cannot
see, download, delete or list each other's files in either version (V1_ACCESS=token), admins who
reach every file, open v1 that sees only ownerless files, and every route refusing a request
without credentials before anything is written."""

from __future__ import annotations

from pathlib import Path

import requests
from sqlalchemy import func, select, update

from common.models import File
from tests.accounts import account, make_admin
from tests.conftest import eventually, wait_for_status

MISSING = "20260101_000000_0123456789abcdef.txt"  # a well-formed name nobody uploaded

#: (method, path) of every file route of both versions, {name} for a file's name.
FILE_ROUTES = [
    ("GET", "/api/v2/files/{name}"),
    ("GET", "/api/v2/files/{name}/download"),
    ("DELETE", "/api/v2/files/{name}"),
    ("GET", "/files/{name}/info"),
    ("GET", "/files/{name}/download"),
    ("DELETE", "/files/{name}"),
    ("GET", "/api/v1/files/{name}/info"),
    ("GET", "/api/v1/files/{name}/download"),
    ("DELETE", "/api/v1/files/{name}"),
]
VARYING = {"Date", "X-Request-ID", "Content-Length"} | {
    h for h in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "Retry-After")
}


def _answer(reply: requests.Response) -> tuple:
    headers = {k: v for k, v in reply.headers.items() if k not in VARYING}
    return reply.status_code, reply.content, headers


def test_someone_elses_file_is_answered_as_a_missing_one(token_api, clean_stack):
    alice = account(token_api, "alice")
    bob = account(token_api, "bob")
    mine = {
        alice.upload("/api/v2/files"),
        alice.upload("/files/upload"),
        alice.upload("/api/v1/files/upload"),
    }
    for name in mine:
        wait_for_status(clean_stack.db, name, {"stored"})
    for method, route in FILE_ROUTES:
        for name in mine:
            theirs = requests.request(method, token_api + route.format(name=name), headers=bob.auth)
            missing = requests.request(
                method, token_api + route.format(name=MISSING), headers=bob.auth
            )
            assert theirs.status_code == 404, (method, route, theirs.text)
            assert theirs.json()["code"] == "FILE_NOT_FOUND"
            assert _answer(theirs) == _answer(missing), (method, route)
    # Nothing of alice's shows in bob's listings, and her files are all still there.
    assert bob.get("/api/v2/files").json()["items"] == []
    assert bob.get("/files").json()["files"] == []
    assert bob.get("/api/v1/files").json()["count"] == 0
    listed = {f["name"] for f in alice.get("/api/v2/files").json()["items"]}
    assert listed == mine
    assert {f["name"] for f in alice.get("/files").json()["files"]} == mine
    for name in mine:
        assert alice.get(f"/api/v2/files/{name}").json()["status"] == "stored"
        assert alice.get(f"/files/{name}/download").status_code == 200


def test_owners_act_on_their_own_files_in_both_versions(token_api, clean_stack):
    alice = account(token_api, "alice")
    name = alice.upload("/files/upload")
    wait_for_status(clean_stack.db, name, {"stored"})
    info = alice.get(f"/api/v2/files/{name}").json()
    assert info["owner"] == "alice" and info["tags"] == [] and info["category"] is None
    assert alice.get(f"/api/v1/files/{name}/info").json()["name"] == name
    assert alice.delete(f"/api/v1/files/{name}").status_code == 200
    assert alice.get(f"/api/v2/files/{name}").status_code == 404
    other = alice.upload("/api/v2/files")
    assert alice.delete(f"/api/v2/files/{other}").status_code == 204
    assert alice.get(f"/files/{other}/info").status_code == 404


def test_admins_reach_every_file(token_api, clean_stack):
    alice = account(token_api, "alice")
    root = make_admin(clean_stack.db, account(token_api, "root"))
    name = alice.upload()
    wait_for_status(clean_stack.db, name, {"stored"})
    assert root.get(f"/api/v2/files/{name}").json()["owner"] == "alice"
    assert root.get(f"/files/{name}/download").status_code == 200
    # A listing is one owner's: the admin's own by default, anyone's by name, or everyone's.
    assert root.get("/api/v2/files").json()["items"] == []
    by_owner = root.get("/api/v2/files", params={"owner": "alice"}).json()["items"]
    assert [f["name"] for f in by_owner] == [name]
    assert [
        f["name"] for f in root.get("/api/v2/files", params={"owner": "*"}).json()["items"]
    ] == [name]
    with clean_stack.db.session() as session:  # an ownerless file (uploaded through open v1)
        session.execute(update(File).where(File.name == name).values(owner_id=None))
    assert root.get("/api/v2/files", params={"owner": "nobody"}).json()["items"] == []
    assert [
        f["owner"] for f in root.get("/api/v2/files", params={"owner": "*"}).json()["items"]
    ] == [None]
    assert root.get(f"/api/v2/files/{name}").status_code == 200  # admins reach ownerless files
    with clean_stack.db.session() as session:
        session.execute(update(File).where(File.name == name).values(owner_id=alice.id))
    refused = alice.get("/api/v2/files", params={"owner": "root"})
    assert refused.status_code == 403 and refused.json()["code"] == "FORBIDDEN"
    assert root.delete(f"/api/v2/files/{name}").status_code == 204
    assert alice.get(f"/api/v2/files/{name}").status_code == 404


def test_v1_user_routes_in_token_mode(token_api, clean_stack):
    alice = account(token_api, "alice")
    account(token_api, "bob")
    assert [u["username"] for u in alice.get("/users").json()] == ["alice"]
    made = alice.post("/users", json={"username": "carol", "email": "carol@example.com"})
    assert made.status_code == 403 and made.json()["code"] == "FORBIDDEN"
    root = make_admin(clean_stack.db, account(token_api, "root"))
    assert [u["username"] for u in root.get("/api/v1/users").json()] == ["alice", "bob", "root"]
    made = root.post("/users", json={"username": "carol", "email": "carol@example.com"})
    assert made.status_code == 201 and made.json()["username"] == "carol"
    assert requests.get(token_api + "/users").status_code == 401


def _routes(name: str) -> list[tuple[str, str]]:
    routes = [(m, r.format(name=name)) for m, r in FILE_ROUTES]
    routes += [
        ("GET", "/api/v2/files"),
        ("GET", "/files"),
        ("GET", "/api/v1/files"),
        ("GET", "/users"),
        ("GET", "/api/v1/users"),
        ("POST", "/users"),
        ("GET", "/api/v2/me"),
        ("GET", "/api/v2/keys"),
        ("POST", "/api/v2/keys"),
        ("DELETE", "/api/v2/keys/1"),
        ("DELETE", "/api/v2/auth/token"),
    ]
    return routes


def test_every_route_refuses_a_request_without_credentials(token_api, clean_stack):
    alice = account(token_api, "alice")
    name = alice.upload()
    wait_for_status(clean_stack.db, name, {"stored"})
    staging = Path(clean_stack.settings.staging_dir)
    # The worker removes the staged copy just after the stored status commits.
    assert eventually(lambda: not (staging / name).exists(), timeout=10)
    staged_before = sorted(staging.rglob("*"))
    for method, path in _routes(name):
        reply = requests.request(method, token_api + path)
        assert reply.status_code == 401, (method, path, reply.text)
        assert reply.json()["code"] == "UNAUTHORIZED"
        assert reply.headers["WWW-Authenticate"] == 'Bearer realm="upload-pipeline"'
    for path in ("/api/v2/files", "/files/upload", "/api/v1/files/upload"):
        reply = requests.post(token_api + path, files={"file": ("b.txt", b"bytes")})
        assert reply.status_code == 401, path
    with clean_stack.db.session() as session:
        assert session.scalar(select(func.count()).select_from(File)) == 1  # alice's only
    assert alice.get(f"/api/v2/files/{name}").status_code == 200
    assert sorted(staging.rglob("*")) == staged_before


def test_open_v1_sees_only_ownerless_files(token_api, stack_api):
    alice = account(token_api, "alice")
    owned = alice.upload()
    opened = stack_api  # V1_ACCESS=open (the local stack), over the same database
    reply = requests.post(opened + "/api/v1/files/upload", files={"file": ("o.txt", b"x")})
    ownerless = reply.json()["filename"]
    assert reply.headers["Location"].endswith(f"/api/v1/files/{ownerless}/info")
    names = [f["name"] for f in requests.get(opened + "/files").json()["files"]]
    assert names == [ownerless]
    assert requests.get(f"{opened}/files/{owned}/info").status_code == 404
    assert requests.delete(f"{opened}/files/{owned}").status_code == 404
    # v2 needs credentials whatever V1_ACCESS says; alice's token still works there.
    assert requests.get(opened + "/api/v2/files").status_code == 401
    alice.url = opened
    assert [f["name"] for f in alice.get("/api/v2/files").json()["items"]] == [owned]
