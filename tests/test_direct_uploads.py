"""Direct uploads over HTTP against gunicorn and a worker, on both stacks: a file declared,
sent in parts by plain PUTs to the URLs given (the API's on the filesystem store, SeaweedFS's
own presigned URLs on S3), resumed from the ledger, completed, verified and stored
byte-identical; every bad part, URL and declaration refused (by the store itself on S3), and
nothing left behind by rejections, aborts and expiries, on disk or in the bucket; the declared
bytes reserved against the quota."""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import boto3
import pytest
import requests
from sqlalchemy import select, update

from common.files import direct, usage
from common.files.reconcile import reconcile
from common.models import DirectUpload, User, utcnow
from tests.accounts import account
from tests.conftest import eventually, wait_for_status

MIB = 1024 * 1024
PART = 8 * MIB  # UPLOAD_PART_MB's default


def _text(size: int, seed: int = 0) -> bytes:
    """``size`` bytes of text lines (what a .txt must hold), different for each seed."""
    line = f"line of direct upload {seed} ".encode()
    body = (line * (size // len(line) + 1))[: size - 1] + b"\n"
    return body


def _create(user, data: bytes, name: str = "big.txt", **extra) -> requests.Response:
    declared = {"filename": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    return user.post("/api/v2/uploads", json=declared | extra)


def _put(part: dict, data: bytes, url: str | None = None) -> requests.Response:
    """A part's bytes PUT as any HTTP client would, with the headers its URL signs."""
    start = (part["part_number"] - 1) * PART
    body = data[start : start + part["size"]]
    return requests.put(url or part["url"], data=body, headers=part["headers"], timeout=60)


def _on_s3(stack) -> bool:
    return stack.settings.storage_backend == "s3"


def _bucket(stack):
    return boto3.client("s3", endpoint_url=stack.settings.s3_endpoint_url)


def _left_behind(stack, *upload_ids: str) -> list[str]:
    """What these uploads left: part files in the staging directory, and on S3 objects and
    multipart uploads under their keys."""
    left = [str(p) for upload_id in upload_ids for p in _staged_parts(stack, upload_id)]
    if _on_s3(stack):
        bucket, client = stack.settings.s3_bucket, _bucket(stack)
        for upload_id in upload_ids:
            key = f"uploads/{upload_id}"
            objects = client.list_objects_v2(Bucket=bucket, Prefix=key).get("Contents", [])
            uploads = client.list_multipart_uploads(Bucket=bucket, Prefix=key).get("Uploads", [])
            left += [o["Key"] for o in objects] + [f"multipart {u['Key']}" for u in uploads]
    return left


def _stored_object(stack, name: str) -> bool:
    if not _on_s3(stack):
        return (Path(stack.settings.storage_dir) / name).exists()
    try:
        _bucket(stack).head_object(Bucket=stack.settings.s3_bucket, Key=name)
    except _bucket(stack).exceptions.ClientError:
        return False
    return True


def _used(db, user_id: int) -> int:
    with db.session() as session:
        return session.scalar(select(User.used_bytes).where(User.id == user_id))


def _staged_parts(stack, upload_id: str) -> list[Path]:
    """The part files (whole or half-written) of an upload in the staging directory."""
    return list((Path(stack.settings.staging_dir) / "uploads" / upload_id).glob("*"))


@pytest.mark.slow
def test_a_large_file_sent_in_parts_is_verified_stored_and_downloads_identical(
    token_api, clean_stack
):
    alice = account(token_api, "alice")
    data = _text(40 * MIB)
    created = _create(alice, data, tags=["big"])
    assert created.status_code == 201, created.text
    upload = created.json()
    assert upload["part_size"] == PART and len(upload["parts"]) == 5
    assert [p["size"] for p in upload["parts"]] == [PART] * 5
    assert _used(clean_stack.db, alice.id) == len(data)  # reserved at once
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda p: _put(p, data), upload["parts"]))
    assert [r.status_code for r in replies] == [200] * 5
    assert all(r.headers["ETag"] for r in replies)
    done = alice.post(f"/api/v2/uploads/{upload['upload_id']}/complete")
    assert done.status_code == 202, done.text
    file = done.json()["file"]
    # The file as it is when answered: a quick worker may have taken it already.
    assert file["status"] in {"pending", "processing", "stored"}
    assert file["size"] == len(data) and file["tags"] == ["big"]
    wait_for_status(clean_stack.db, file["name"], {"stored"}, timeout=120)
    url = alice.get(f"/api/v2/files/{file['name']}/download").json()["download_url"]
    got = requests.get(url if url.startswith("http") else token_api + url, timeout=60)
    assert hashlib.sha256(got.content).hexdigest() == hashlib.sha256(data).hexdigest()
    assert _used(clean_stack.db, alice.id) == len(data)  # the reservation became the file
    assert _left_behind(clean_stack, upload["upload_id"]) == []
    state = alice.get(f"/api/v2/uploads/{upload['upload_id']}").json()
    assert state["state"] == "completed" and state["file"]["name"] == file["name"]
    again = alice.post(f"/api/v2/uploads/{upload['upload_id']}/complete")  # idempotent
    assert again.status_code == 202 and again.json()["file"]["name"] == file["name"]
    with clean_stack.db.session() as session:
        assert usage.drift(session) == []


def test_an_upload_resumes_from_the_parts_the_service_has(token_api, clean_stack):
    alice = account(token_api, "alice")
    data = _text(PART * 2 + 1000, seed=1)
    upload = _create(alice, data).json()
    first = upload["parts"][0]
    assert _put(first, data).status_code == 200
    state = alice.get(f"/api/v2/uploads/{upload['upload_id']}").json()
    assert [p["received"] for p in state["parts"]] == [True, False, False]
    missing = alice.post(f"/api/v2/uploads/{upload['upload_id']}/complete")
    assert missing.status_code == 400 and missing.json()["code"] == "PARTS_MISSING"
    assert missing.json()["details"]["missing"] == [2, 3]
    fresh = alice.post(
        f"/api/v2/uploads/{upload['upload_id']}/parts", json={"part_numbers": [2, 3]}
    ).json()["parts"]
    assert [p["part_number"] for p in fresh] == [2, 3] and fresh[1]["size"] == 1000
    for part in fresh:
        assert _put(part, data).status_code == 200
    done = alice.post(f"/api/v2/uploads/{upload['upload_id']}/complete")
    assert done.status_code == 202
    wait_for_status(clean_stack.db, done.json()["file"]["name"], {"stored"}, timeout=60)


def _refusal(reply: requests.Response) -> tuple[int, str]:
    """A refused PUT's status and code: the API's JSON ``code``, or the store's XML Code."""
    if reply.headers.get("Content-Type", "").startswith("application/json"):
        return reply.status_code, reply.json()["code"]
    return reply.status_code, reply.text.split("<Code>")[1].split("</Code>")[0]


def test_bad_parts_and_urls_are_refused(token_api, clean_stack):
    alice = account(token_api, "alice")
    data = _text(PART + 10, seed=2)
    digests = [hashlib.sha256(data[:PART]).hexdigest(), hashlib.sha256(data[PART:]).hexdigest()]
    upload = _create(alice, data, part_sha256=digests).json()
    one, two = upload["parts"]
    s3 = _on_s3(clean_stack)
    denied = (403, "SignatureDoesNotMatch") if s3 else (403, "INVALID_SIGNATURE")
    # The URL of part 1 used for part 2; a forged expiry.
    other = one["url"].replace("partNumber=1&", "partNumber=2&").replace("/parts/1?", "/parts/2?")
    assert other != one["url"]
    assert _refusal(_put(two, data, url=other)) == denied
    forged = one["url"].replace("xpires=", "xpires=9")
    assert _refusal(_put(one, data, url=forged))[0] == 403
    # A body of another length; bytes that are not the declared sha256.
    short = requests.put(two["url"], data=data[PART:-1], headers=two["headers"] | {})
    assert _refusal(short) == (
        (403, "SignatureDoesNotMatch") if s3 else (400, "PART_SIZE_MISMATCH")
    )
    wrong = requests.put(
        two["url"], data=b"x" * 10, headers={k: v for k, v in two["headers"].items()}
    )
    assert _refusal(wrong) == ((400, "BadDigest") if s3 else (400, "CHECKSUM_MISMATCH"))
    # A URL whose time is up: signed as the service signs, an hour ago.
    if s3:
        storage = _s3_storage(clean_stack)
        url, headers = storage.sign_part(
            f"uploads/{upload['upload_id']}", _store_id(clean_stack, upload), 1, PART,
            digests[0], 1,
        )  # fmt: skip
        time.sleep(2)
        expired = requests.put(url, data=data[:PART], headers=headers)
    else:
        past = int(time.time()) - 3600
        secret = clean_stack.settings.resolved_secret_key()
        signature = direct._signature(secret, upload["upload_id"], 1, PART, digests[0], past)
        url = one["url"].split("?")[0] + f"?expires={past}&signature={signature}"
        expired = requests.put(url, data=data[:PART])
    assert _refusal(expired)[0] == 403
    state = alice.get(f"/api/v2/uploads/{upload['upload_id']}").json()
    assert [p["received"] for p in state["parts"]] == [False, False]
    assert _staged_parts(clean_stack, upload["upload_id"]) == []  # nothing half-written kept
    assert _put(one, data).status_code == 200  # the right bytes to the right URL
    state = alice.get(f"/api/v2/uploads/{upload['upload_id']}").json()
    assert [p["received"] for p in state["parts"]] == [True, False]


def _s3_storage(stack):
    from common.storage.s3 import S3Storage

    return S3Storage.from_settings(stack.settings)


def _store_id(stack, upload: dict) -> str:
    with stack.db.session() as session:
        return session.get(DirectUpload, upload["upload_id"]).store_upload_id


def test_a_wrong_declared_sha256_or_a_spoofed_type_is_rejected_leaving_nothing(
    token_api, clean_stack
):
    alice = account(token_api, "alice")
    data = _text(1000, seed=3)
    lying = alice.post(
        "/api/v2/uploads",
        json={"filename": "a.txt", "size": len(data), "sha256": "0" * 64},
    ).json()
    assert _put(lying["parts"][0], data).status_code == 200
    done = alice.post(f"/api/v2/uploads/{lying['upload_id']}/complete").json()
    lied = wait_for_status(clean_stack.db, done["file"]["name"], {"rejected"})
    assert lied.error == "the file's sha256 is not the one declared"
    spoofed = _create(alice, data, name="photo.png").json()
    assert _put(spoofed["parts"][0], data).status_code == 200
    name = alice.post(f"/api/v2/uploads/{spoofed['upload_id']}/complete").json()["file"]["name"]
    wait_for_status(clean_stack.db, name, {"rejected"})
    assert _used(clean_stack.db, alice.id) == 0  # rejected files hold no quota
    assert eventually(lambda: _left_behind(clean_stack, lying["upload_id"]) == [])
    assert eventually(lambda: _left_behind(clean_stack, spoofed["upload_id"]) == [])
    assert not _stored_object(clean_stack, done["file"]["name"])
    assert not _stored_object(clean_stack, name)
    staged = Path(clean_stack.settings.staging_dir)
    # The worker removes a rejected file's staged copy just after committing its status.
    assert eventually(
        lambda: not any(staged.glob(f"{done['file']['name']}*")) and not (staged / name).exists()
    )


def test_abort_and_expiry_free_the_reservation_and_the_parts(token_api, clean_stack, pipeline):
    alice, bob = account(token_api, "alice"), account(token_api, "bob")
    data = _text(PART + 5, seed=4)
    upload = _create(alice, data).json()
    assert _put(upload["parts"][0], data).status_code == 200
    assert bob.get(f"/api/v2/uploads/{upload['upload_id']}").status_code == 404  # not his
    assert bob.delete(f"/api/v2/uploads/{upload['upload_id']}").status_code == 404
    assert _used(clean_stack.db, alice.id) == len(data)
    for _ in range(2):  # idempotent
        assert alice.delete(f"/api/v2/uploads/{upload['upload_id']}").status_code == 204
    assert _used(clean_stack.db, alice.id) == 0
    assert _left_behind(clean_stack, upload["upload_id"]) == []
    late = alice.post(f"/api/v2/uploads/{upload['upload_id']}/complete")
    assert late.status_code == 409 and late.json()["code"] == "UPLOAD_CLOSED"
    # The store has no such upload any more (404 NoSuchUpload); the API's URL: closed (409).
    assert _put(upload["parts"][1], data).status_code in ((404,) if _on_s3(clean_stack) else (409,))
    # Never completed: beat aborts it once UPLOAD_TTL has passed.
    left = _create(alice, data).json()
    assert _put(left["parts"][0], data).status_code == 200
    with clean_stack.db.session() as session:
        session.execute(
            update(DirectUpload)
            .where(DirectUpload.id == left["upload_id"])
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert reconcile(pipeline).expired == 1
    assert alice.get(f"/api/v2/uploads/{left['upload_id']}").json()["state"] == "aborted"
    assert _used(clean_stack.db, alice.id) == 0
    assert _left_behind(clean_stack, left["upload_id"]) == []


def test_an_upload_the_store_never_opened_reads_as_empty_and_aborts(token_api, clean_stack):
    """The API records an upload, then opens it in the store: stopped in between (or asked in
    between), the upload is open with nothing received, cannot complete, and aborts cleanly."""
    alice = account(token_api, "alice")
    data = _text(PART + 5, seed=7)
    upload = _create(alice, data).json()
    if _on_s3(clean_stack):  # as if the store had never been asked
        with clean_stack.db.session() as session:
            store_id = session.scalar(
                select(DirectUpload.store_upload_id).where(DirectUpload.id == upload["upload_id"])
            )
        _bucket(clean_stack).abort_multipart_upload(
            Bucket=clean_stack.settings.s3_bucket,
            Key=f"uploads/{upload['upload_id']}",
            UploadId=store_id,
        )
    with clean_stack.db.session() as session:
        session.execute(
            update(DirectUpload)
            .where(DirectUpload.id == upload["upload_id"])
            .values(store_upload_id=None)
        )
    state = alice.get(f"/api/v2/uploads/{upload['upload_id']}")
    assert state.status_code == 200, state.text
    assert state.json()["state"] == "open"
    assert [p["received"] for p in state.json()["parts"]] == [False, False]
    early = alice.post(f"/api/v2/uploads/{upload['upload_id']}/complete")
    assert early.status_code == 400 and early.json()["details"]["missing"] == [1, 2]
    assert alice.delete(f"/api/v2/uploads/{upload['upload_id']}").status_code == 204
    assert _used(clean_stack.db, alice.id) == 0
    assert _left_behind(clean_stack, upload["upload_id"]) == []


def test_declarations_are_checked_before_anything_is_signed(token_api, clean_stack):
    alice = account(token_api, "alice")
    exe = alice.post("/api/v2/uploads", json={"filename": "a.exe", "size": 10})
    assert exe.status_code == 415 and exe.json()["code"] == "EXTENSION_NOT_ALLOWED"
    huge = alice.post("/api/v2/uploads", json={"filename": "a.txt", "size": 6 * 1024**4})
    assert huge.status_code == 413 and huge.json()["code"] == "FILE_TOO_LARGE"
    wrong = alice.post(
        "/api/v2/uploads", json={"filename": "a.txt", "size": 10, "part_sha256": ["0" * 64] * 2}
    )
    assert wrong.status_code == 400
    assert (
        requests.post(token_api + "/api/v2/uploads", json={"filename": "a.txt"}).status_code == 401
    )
    with clean_stack.db.session() as session:
        assert session.scalar(select(DirectUpload.id)) is None


@pytest.mark.parametrize("stack", ["postgres-s3", "sqlite-fs"], indirect=True)
def test_racing_creates_get_exactly_the_room_of_the_quota(token_api, clean_stack):
    alice = account(token_api, "alice")
    with clean_stack.db.session() as session:
        session.execute(update(User).where(User.id == alice.id).values(quota_mb=10))
    size = MIB  # room for exactly ten

    def create(_: int) -> int:
        return alice.post("/api/v2/uploads", json={"filename": "q.txt", "size": size}).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(create, range(20)))
    assert sorted(codes) == [201] * 10 + [403] * 10
    assert _used(clean_stack.db, alice.id) == 10 * size


def test_a_file_deleted_before_a_worker_took_it_leaves_nothing(token_api, clean_stack, pipeline):
    """Completed, then deleted while its task waits (no worker listens to this pipeline's
    broker): on S3 the joined object under uploads/ goes with the file."""
    alice = account(token_api, "alice")
    data = _text(1000, seed=5)
    declared = direct.Declared(
        owner_id=alice.id, original_name="d.txt", extension="txt", size=len(data), sha256=None,
        part_sha256=None, tags=[], category=None,
    )  # fmt: skip
    upload = direct.do_create_upload(pipeline, declared)
    with pipeline.db.reading() as session:
        (part,) = direct.ledger(session, upload.id)
    signed = direct.part_url(pipeline, upload, part, token_api)
    assert requests.put(signed.url, data=data, headers=signed.headers).status_code == 200
    with pipeline.db.reading() as session:
        upload = session.get(DirectUpload, upload.id)
    file = direct.do_complete_upload(pipeline, upload)
    assert file.status.value == "pending"
    assert pipeline.delete(file.name)
    assert _left_behind(clean_stack, upload.id) == []
    assert not _stored_object(clean_stack, file.name)
    assert not (Path(clean_stack.settings.staging_dir) / file.name).exists()
