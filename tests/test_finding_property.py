"""Property: any combination of listing filters and sort, paged with any limit, gives exactly the
files the same filtering and ordering done in Python gives (both databases, in process)."""

from __future__ import annotations

import io
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import update

from common.models import File, FileStatus, search_key
from tests.conftest import wait_for_status
from tests.samples import pdf, png

NAMES = [
    "Отчёт за МАЙ",
    "отчёт итог",
    "ΣΗΜΕΙΩΣΕΙΣ",
    "σημείωση",
    "MiXeD Case",
    "mixed_case",
    "100% done",
    "plain",
    "Straße",
    "STRASSE",
    "a_b%c",
    "ﬁle ligature",
]
TAGS = ["work", "финансы", "photos", "archive", "q3"]
CATEGORIES = [None, "docs", "pictures"]
STATUSES = [s.value for s in FileStatus if s is not FileStatus.DELETED]
KINDS = {"txt": lambda size: b"t" * size, "pdf": lambda _size: pdf(), "png": lambda _size: png()}


def _seed(client, auth, db) -> list[dict]:
    rng = random.Random(7)
    files = []
    for i in range(30):
        extension = rng.choice(list(KINDS))
        data = KINDS[extension](rng.randint(1, 60))
        tags = rng.sample(TAGS, rng.randint(0, 3))
        category = rng.choice(CATEGORIES)
        form = {"file": (io.BytesIO(data), f"{rng.choice(NAMES)} {i}.{extension}")}
        if tags:
            form["tags"] = ",".join(tags)
        if category:
            form["category"] = category
        reply = client.post("/api/v2/files", headers=auth, data=form)
        assert reply.status_code == 201, reply.get_json()
        files.append(reply.get_json() | {"order": i})
    for file in files:  # settled by the worker, then given a status of the test's choosing
        wait_for_status(db, file["name"], {"stored", "rejected"})
        file["status"] = rng.choice(STATUSES)
        with db.session() as session:
            session.execute(
                update(File).where(File.name == file["name"]).values(status=file["status"])
            )
    return files


def _expected(files: list[dict], f: dict) -> list[str]:
    chosen = [
        file
        for file in files
        if (f["q"] is None or search_key(f["q"]) in search_key(file["original_name"]))
        and all(tag in file["tags"] for tag in f["tag"])
        and (f["category"] is None or file["category"] == f["category"])
        and file["status"] in (f["status"] or STATUSES)
        and (
            f["content_type"] is None
            or file["content_type"] == f["content_type"]
            or (
                f["content_type"].endswith("/*")
                and file["content_type"].startswith(f["content_type"][:-1])
            )
        )
        and (f["min_size"] is None or file["size"] >= f["min_size"])
        and (f["max_size"] is None or file["size"] <= f["max_size"])
    ]
    key = f["sort"].lstrip("-")
    descending = f["sort"].startswith("-")
    if key == "uploaded_at":
        chosen.sort(key=lambda file: (file["uploaded_at"], file["order"]), reverse=descending)
    else:
        chosen.sort(key=lambda file: (file[key], file["order"]), reverse=descending)
    return [file["name"] for file in chosen]


def sometimes(strategy, empty=None):
    """``empty`` three times in four: combinations of a few filters, not all at once."""
    return st.one_of(st.just(empty), st.just(empty), st.just(empty), strategy)


filters = st.fixed_dictionaries(
    {
        "q": sometimes(
            st.sampled_from(["отчёт", "ОТЧЁТ", "σημ", "MIXED", "%", "_", "ss", "fi", "1"])
        ),
        "tag": sometimes(st.lists(st.sampled_from(TAGS), min_size=1, max_size=2, unique=True), []),
        "category": sometimes(st.sampled_from(CATEGORIES[1:])),
        "status": sometimes(
            st.lists(st.sampled_from(STATUSES), min_size=1, max_size=3, unique=True), []
        ),
        "content_type": sometimes(
            st.sampled_from(["text/plain", "image/*", "application/pdf", "text/*", "image/png"])
        ),
        # The size of the n-th file: the bounds fall on sizes that exist.
        "min_size": sometimes(st.integers(0, 29)),
        "max_size": sometimes(st.integers(0, 29)),
        "sort": st.sampled_from(
            [f"{d}{k}" for k in ("uploaded_at", "name", "original_name", "size") for d in ("", "-")]
        ),
        "limit": st.integers(1, 12),
    }
)


def test_listing_matches_python_filtering(app, client, clean_stack):
    account = {"username": "prop", "email": "prop@example.com", "password": "property pass"}
    assert client.post("/api/v2/users", json=account).status_code == 201
    login = {"username": "prop", "password": "property pass"}
    token = client.post("/api/v2/auth/token", json=login).get_json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    files = _seed(client, auth, clean_stack.db)

    @given(f=filters)
    @settings(
        max_examples=100, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def check(f):
        for bound in ("min_size", "max_size"):
            if f[bound] is not None:
                f[bound] = files[f[bound]]["size"]
        params = {k: v for k, v in f.items() if v is not None and v != []}
        got, cursor = [], None
        while True:
            query = params | ({"cursor": cursor} if cursor else {})
            reply = client.get("/api/v2/files", headers=auth, query_string=query)
            assert reply.status_code == 200, reply.get_json()
            got += [item["name"] for item in reply.get_json()["items"]]
            cursor = reply.get_json()["next_cursor"]
            if cursor is None:
                break
        assert got == _expected(files, f), params

    check()
