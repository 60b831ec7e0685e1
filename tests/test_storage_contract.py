"""One contract, two stores: the filesystem store and S3 over HTTP (moto's server)."""

import hashlib
import time
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import requests

from api.services import services
from common.storage import (
    PutRequest,
    StorageIntegrityError,
    StorageRefused,
    StorageUnavailable,
    ascii_metadata,
    content_disposition,
)
from common.storage.filesystem import FilesystemStorage
from common.storage.s3 import S3Storage
from tests.conftest import close_app, settings_for


@pytest.fixture(params=["filesystem", "s3"])
def store(request, tmp_path, s3_endpoint):
    """``(storage, fetch)``: fetch(url) does a plain GET the way a client would."""
    if request.param == "s3":
        storage = S3Storage(f"contract-{uuid.uuid4().hex[:8]}", endpoint_url=s3_endpoint)
        storage.ensure_bucket()
        yield storage, lambda url: _requests_get(url)
        return
    from api import create_app

    settings = settings_for(tmp_path, database_url=f"sqlite:///{tmp_path / 'x.db'}")
    app = create_app(settings)
    storage = services(app).pipeline.storage
    client = app.test_client()
    yield storage, lambda url: _client_get(client, url)
    close_app(app)


def _requests_get(url):
    reply = requests.get(url, timeout=10)
    return reply.status_code, reply.headers, reply.content


def _client_get(client, url):
    with client.get(url) as reply:
        return reply.status_code, reply.headers, reply.data


def put(storage, tmp_path, data=b"contract bytes", name="Отчёт «итог».pdf"):
    key = f"20250906_123456_{uuid.uuid4().hex[:16]}.pdf"
    path = tmp_path / "staged"
    path.write_bytes(data)
    request = PutRequest(
        key=key,
        path=path,
        content_type="application/pdf",
        original_name=name,
        md5_hex=hashlib.md5(data).hexdigest(),
        metadata=ascii_metadata({"original_name": name, "file_size": str(len(data))}),
    )
    return key, storage.put(request)


def test_put_then_head_describes_the_object(store, tmp_path):
    storage, _ = store
    key, info = put(storage, tmp_path)
    assert info.key == key
    assert info.size == len(b"contract bytes")
    assert info.etag == hashlib.md5(b"contract bytes").hexdigest()
    assert abs(info.last_modified - datetime.now(UTC)) < timedelta(minutes=1)
    assert unquote(storage.head(key).metadata["original_name"]) == "Отчёт «итог».pdf"


def test_put_is_idempotent(store, tmp_path):
    storage, _ = store
    key, first = put(storage, tmp_path)
    path = tmp_path / "staged"
    again = storage.put(PutRequest(key, path, "application/pdf", "a.pdf", first.etag, {"a": "b"}))
    assert again.etag == first.etag and again.size == first.size


def test_presigned_url_serves_bytes_type_and_disposition(store, tmp_path):
    storage, fetch = store
    key, _ = put(storage, tmp_path, data=b"%PDF-1.4 hello")
    status, headers, body = fetch(storage.presign_get(key, 60))
    assert status == 200
    assert body == b"%PDF-1.4 hello"
    assert headers["Content-Type"] == "application/pdf"
    assert headers["Content-Disposition"] == content_disposition("Отчёт «итог».pdf")
    assert "filename*=UTF-8''%D0%9E%D1%82%D1%87%D1%91%D1%82" in headers["Content-Disposition"]


def test_presigned_url_of_the_filesystem_store_expires(tmp_path):
    """(S3's expiry: tests/test_presigned_expiry.py, against a store that checks it.)"""
    from api import create_app

    settings = settings_for(tmp_path, database_url=f"sqlite:///{tmp_path / 'x.db'}")
    app = create_app(settings)
    storage = services(app).pipeline.storage
    key, _ = put(storage, tmp_path)
    url = storage.presign_get(key, 3)  # until a whole second: 2 at least for the first GET
    client = app.test_client()
    assert _client_get(client, url)[0] == 200
    expires = int(parse_qs(urlsplit(url).query)["expires"][0])
    time.sleep(max(0.0, expires + 0.2 - time.time()))
    status, _, body = _client_get(client, url)
    close_app(app)
    assert status == 403 and b"INVALID_SIGNATURE" in body


def test_delete_removes_and_tolerates_missing(store, tmp_path):
    storage, fetch = store
    key, _ = put(storage, tmp_path)
    url = storage.presign_get(key, 60)
    storage.delete(key)
    storage.delete(key)
    with pytest.raises(FileNotFoundError):
        storage.head(key)
    status, _, _ = fetch(url)
    assert status in (403, 404)


def test_download_copies_bytes(store, tmp_path):
    storage, _ = store
    key, _ = put(storage, tmp_path, data=b"abc" * 1000)
    target = tmp_path / "copy"
    storage.download(key, target)
    assert target.read_bytes() == b"abc" * 1000


def test_health_ok(store):
    storage, _ = store
    storage.health()


def test_s3_down_is_unavailable_quickly():
    storage = S3Storage("nobucket", endpoint_url="http://127.0.0.1:9")
    started = time.monotonic()
    with pytest.raises(StorageUnavailable):
        storage.health()
    assert time.monotonic() - started < 3


def test_s3_missing_bucket_is_refused_with_the_store_code(s3_endpoint):
    storage = S3Storage(f"absent-{uuid.uuid4().hex[:8]}", endpoint_url=s3_endpoint)
    with pytest.raises(StorageRefused, match="NoSuchBucket"):
        storage.delete("20250906_123456_0123456789abcdef.pdf")
    with pytest.raises(StorageRefused, match="NoSuchBucket"):
        storage.health()


def test_s3_signing_deleting_and_probing_load_no_boto3_client(s3_endpoint, tmp_path):
    """What the API does with the store must not load the S3 service model (its memory)."""
    storage = S3Storage(f"lean-{uuid.uuid4().hex[:8]}", endpoint_url=s3_endpoint)
    worker_side = S3Storage(storage.bucket, endpoint_url=s3_endpoint)
    worker_side.ensure_bucket()
    key, _ = put(worker_side, tmp_path)
    status, _, body = _requests_get(storage.presign_get(key, 60))
    assert (status, body) == (200, b"contract bytes")
    storage.health()
    storage.delete(key)
    with pytest.raises(FileNotFoundError):
        worker_side.head(key)
    assert storage._client_instance is None


def test_filesystem_rejects_keys_that_are_not_generated_names(tmp_path):
    storage = FilesystemStorage(tmp_path, "k")
    for key in ("../secret", "/etc/passwd", "a/../../b"):
        with pytest.raises(FileNotFoundError):
            storage.head(key)
    assert not storage.verify("x", "99999999999", "forged")


def test_content_disposition_has_ascii_fallback():
    value = content_disposition('a "quoted"; name.txt')
    assert value.startswith('attachment; filename="a _quoted__ name.txt"')


def test_s3_presigned_url_is_the_one_boto3_signs():
    import boto3
    from botocore.config import Config

    storage = S3Storage(
        "bucket", endpoint_url="http://minio:9000", public_endpoint_url="http://localhost:9000"
    )
    client = boto3.client(
        "s3",
        endpoint_url="http://localhost:9000",
        region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    key = "20250906_123456_0123456789abcdef.pdf"
    for _ in range(3):  # the two signatures must be made within the same second
        ours = storage.presign_get(key, 300)
        theirs = client.generate_presigned_url(
            "get_object", Params={"Bucket": "bucket", "Key": key}, ExpiresIn=300
        )
        if ours == theirs:
            break
    assert ours == theirs
    assert ours.startswith(f"http://localhost:9000/bucket/{key}?")


def test_s3_presign_without_credentials_is_unavailable(monkeypatch, tmp_path):
    """Nothing in the environment, no shared files, no instance metadata: no credentials."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    storage = S3Storage("bucket", endpoint_url="http://127.0.0.1:9")
    with pytest.raises(StorageUnavailable):
        storage.presign_get("20250906_123456_0123456789abcdef.pdf", 60)


# -- what real S3 answers and moto does not (tests/s3stub.py) --------------------------------


@pytest.fixture
def stub():
    from tests.s3stub import S3Stub

    server = S3Stub()
    yield server
    server.close()


def stub_store(stub, **kwargs) -> S3Storage:
    return S3Storage("bucket", endpoint_url=stub.url, **kwargs)


@pytest.mark.parametrize(
    ("status", "code", "raised"),
    [
        (400, "MetadataTooLarge", StorageRefused),
        (403, "AccessDenied", StorageRefused),
        (404, "NoSuchBucket", StorageRefused),
        (400, "InvalidArgument", StorageRefused),
        (503, "SlowDown", StorageUnavailable),
        (500, "InternalError", StorageUnavailable),
        (400, "RequestTimeout", StorageUnavailable),
        (403, "RequestTimeTooSkewed", StorageUnavailable),
    ],
)
def test_store_errors_are_told_permanent_or_passing(stub, tmp_path, status, code, raised):
    from tests.s3stub import error_xml

    stub.responses = {m: (status, {}, error_xml(code, "said the store")) for m in ("PUT", "DELETE")}
    storage = stub_store(stub)
    with pytest.raises(raised, match=code):
        put(storage, tmp_path)
    with pytest.raises(raised, match=code):
        storage.delete("20250906_123456_0123456789abcdef.pdf")


def test_an_sse_kms_object_whose_etag_is_not_the_md5_is_stored(stub, tmp_path):
    kms = {"ETag": '"6f1c2b0e9a3d4c5b8e7f6a5b4c3d2e1f-kms"'}
    kms["Date"] = "Sat, 28 Nov 2026 12:00:00 GMT"
    stub.responses["PUT"] = (200, kms | {"x-amz-server-side-encryption": "aws:kms"}, b"")
    storage = stub_store(stub, encryption="aws:kms", kms_key_id="alias/uploads")
    _, info = put(storage, tmp_path, data=b"encrypted at rest")
    assert info.etag == hashlib.md5(b"encrypted at rest").hexdigest()
    # Without the encryption header the same reply is a store that kept other bytes.
    stub.responses["PUT"] = (200, kms, b"")
    with pytest.raises(StorageIntegrityError):
        put(storage, tmp_path)


def test_pushes_ask_for_the_configured_encryption(s3_endpoint, tmp_path):
    storage = S3Storage(
        f"contract-{uuid.uuid4().hex[:8]}", endpoint_url=s3_endpoint, encryption="AES256"
    )
    storage.ensure_bucket()
    key, _ = put(storage, tmp_path)
    reply = storage._client.head_object(Bucket=storage.bucket, Key=key)
    assert reply["ServerSideEncryption"] == "AES256"


def test_user_metadata_of_a_long_cjk_name_fits_in_s3s_two_kilobytes():
    name = "報" * 251 + ".pdf"  # 255 characters, 9 bytes each once percent-encoded
    values = {"original_name": name, "upload_time": "2026-11-28T12:00:00.000Z"}
    values |= {"file_size": "123", "content_type": "application/pdf", "sha256": "0" * 64}
    encoded = ascii_metadata(values)
    assert sum(len(k) + len(v) for k, v in encoded.items()) <= 2048
    kept = unquote(encoded["original_name"])
    assert name.startswith(kept) and len(kept) > 100  # whole characters, as much as fits
    assert encoded["sha256"] == "0" * 64
    short = {"original_name": "отчёт.pdf"}
    assert unquote(ascii_metadata(short)["original_name"]) == "отчёт.pdf"


def test_a_missing_bucket_is_a_reason_not_to_start_and_an_unreachable_store_is_not(stub):
    from common.storage import refusal_at_start

    stub.responses["HEAD"] = (404, {}, b"")
    assert "NoSuchBucket" in refusal_at_start(stub_store(stub))
    stub.responses["HEAD"] = (200, {}, b"")
    assert refusal_at_start(stub_store(stub)) is None
    unreachable = S3Storage("bucket", endpoint_url="http://127.0.0.1:1")
    assert refusal_at_start(unreachable) is None


def test_a_dotted_bucket_on_aws_is_addressed_path_style():
    import boto3

    storage = S3Storage("my.dotted.bucket", region="eu-west-1")
    url = storage.presign_get("20250906_123456_0123456789abcdef.pdf", 60)
    assert url.startswith(
        "https://s3.eu-west-1.amazonaws.com/my.dotted.bucket/20250906_123456_0123456789abcdef.pdf?"
    )
    client = boto3.client("s3", region_name="eu-west-1")
    theirs = client.generate_presigned_url(
        "get_object", Params={"Bucket": "my.dotted.bucket", "Key": "k"}, ExpiresIn=60
    )
    assert theirs.startswith("https://s3.eu-west-1.amazonaws.com/my.dotted.bucket/k?")


def test_a_presigned_url_can_name_the_file_anew(store, tmp_path):
    """A renamed file downloads under its new name: the URL carries it, signed."""
    storage, fetch = store
    key, _ = put(storage, tmp_path, data=b"%PDF-1.4 hello")
    status, headers, body = fetch(storage.presign_get(key, 60, filename="Новое имя.pdf"))
    assert status == 200 and body == b"%PDF-1.4 hello"
    assert headers["Content-Disposition"] == content_disposition("Новое имя.pdf")


def test_a_renaming_url_is_signed_as_botocore_signs_it():
    import boto3
    from botocore.config import Config

    storage = S3Storage("bucket", endpoint_url="http://localhost:9000")
    client = boto3.client(
        "s3",
        endpoint_url="http://localhost:9000",
        region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    key, name = "20250906_123456_0123456789abcdef.pdf", "Отчёт «итог».pdf"
    params = {
        "Bucket": "bucket",
        "Key": key,
        "ResponseContentDisposition": content_disposition(name),
    }
    for _ in range(3):  # the two signatures must be made within the same second
        ours = storage.presign_get(key, 300, filename=name)
        theirs = client.generate_presigned_url("get_object", Params=params, ExpiresIn=300)
        if ours == theirs:
            break
    assert ours == theirs
