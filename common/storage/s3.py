"""S3 and any S3-compatible store (MinIO, moto) through botocore.

Two layers, so that the API process stays small. Signing URLs, deleting an object and probing
the bucket are single requests built and signed with botocore's own pieces (``AWSRequest``,
``S3SigV4Auth`` / ``S3SigV4QueryAuth``, ``URLLib3Session``): they need no service model. The
full boto3 client, whose S3 model and endpoint rules cost an API process ~20 MiB resident, is
created on first use by what needs it: the workers' push, head and download.
"""

from __future__ import annotations

import base64
import shutil
import threading
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest, AWSResponse
from botocore.exceptions import BotoCoreError, ClientError
from botocore.httpsession import URLLib3Session

from common.settings import Settings
from common.storage import (
    ObjectInfo,
    PutRequest,
    StorageError,
    StorageIntegrityError,
    StorageRefused,
    StorageUnavailable,
    content_disposition,
)

if TYPE_CHECKING:
    from botocore.client import BaseClient
    from botocore.config import Config

_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
#: Client errors (4xx) that pass: retried like server errors. Every other 4xx is permanent.
_PASSING = {
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "ExpiredToken",
    "TokenRefreshRequired",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "OperationAborted",
}
#: Server-side encryption whose ETag is not the MD5 of the object (SSE-KMS, DSSE-KMS).
_ETAG_NOT_MD5 = {"aws:kms", "aws:kms:dsse"}
_MAX_CONNECTIONS = 20
_TIMEOUTS = (3, 30)  # connect, read (seconds): defaults of S3_CONNECT/READ_TIMEOUT


def _config(
    endpoint: str | None, style: str, timeouts: tuple[float, float], attempts: int
) -> Config:
    from botocore.config import Config

    return Config(
        signature_version="s3v4",
        connect_timeout=timeouts[0],
        read_timeout=timeouts[1],
        # "standard": retries of throttling and 5xx with backoff, within one task attempt.
        retries={"total_max_attempts": attempts, "mode": "standard"},
        s3={
            # Path-style addressing for custom endpoints unless asked otherwise: MinIO and moto
            # have no bucket DNS names.
            "addressing_style": "path" if endpoint and style == "auto" else style,
            # The body is covered by Content-MD5, which is signed and which the store verifies;
            # signing its sha256 as well (botocore's default over plain HTTP) would cost one
            # more pass over every object. Over HTTPS botocore does the same by default.
            "payload_signing_enabled": False,
        },
        # Every S3-compatible store checks plain Content-MD5; not all know the newer checksums.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        max_pool_connections=_MAX_CONNECTIONS,
    )


def _bucket_url(endpoint: str | None, bucket: str, region: str, style: str = "auto") -> str:
    """The bucket's base URL, addressed as the boto3 client addresses it: with ``auto``,
    path-style on a custom endpoint and virtual-hosted on AWS, except for a bucket name with
    dots, which AWS's wildcard certificate does not cover (path-style there too, as botocore
    switches to)."""
    if endpoint:
        if style == "virtual":
            scheme, _, host = endpoint.rstrip("/").partition("://")
            return f"{scheme}://{bucket}.{host}"
        return f"{endpoint.rstrip('/')}/{bucket}"
    if style == "path" or (style == "auto" and "." in bucket):
        return f"https://s3.{region}.amazonaws.com/{bucket}"
    return f"https://{bucket}.s3.{region}.amazonaws.com"


class S3Storage:
    serves_signed_urls = False  # clients fetch presigned URLs from the store itself

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        public_endpoint_url: str | None = None,
        region: str = "us-east-1",
        encryption: str | None = None,
        kms_key_id: str | None = None,
        timeouts: tuple[float, float] = _TIMEOUTS,
        attempts: int = 3,
        addressing_style: str = "auto",
    ) -> None:
        self.bucket = bucket
        self._timeouts, self._attempts = timeouts, attempts
        self._style = addressing_style
        self._encryption = {}
        if encryption:
            self._encryption["ServerSideEncryption"] = encryption
        if kms_key_id:
            self._encryption["SSEKMSKeyId"] = kms_key_id
        self._endpoint = endpoint_url
        self._region = region
        self._botocore_session = None
        self._credential_source = None
        self._base = _bucket_url(endpoint_url, bucket, region, addressing_style)
        public = public_endpoint_url or endpoint_url
        self._public_base = _bucket_url(public, bucket, region, addressing_style)
        self._http = URLLib3Session(timeout=timeouts, max_pool_connections=_MAX_CONNECTIONS)
        self._probe_http = URLLib3Session(timeout=(1, 1.5), max_pool_connections=2)
        self._client_lock = threading.Lock()
        self._client_instance: BaseClient | None = None

    @property
    def _client(self) -> BaseClient:
        """The boto3 client (multipart-aware uploads, downloads), created on first use."""
        if self._client_instance is None:
            with self._client_lock:
                if self._client_instance is None:
                    import boto3

                    session = boto3.session.Session(botocore_session=self._session())
                    self._client_instance = session.client(
                        "s3",
                        endpoint_url=self._endpoint,
                        region_name=self._region,
                        config=_config(self._endpoint, self._style, self._timeouts, self._attempts),
                    )
        return self._client_instance

    def prepare(self) -> None:
        """Create the client now (workers do, before their pool forks, so children share it)."""
        self._client  # noqa: B018 - the property creates it

    def sweep(self, older_than: float) -> int:
        """Nothing to sweep: a PUT that never completed leaves no object behind."""
        return 0

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Storage:
        return cls(
            settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            public_endpoint_url=settings.public_s3_endpoint,
            region=settings.s3_region,
            encryption=settings.s3_sse,
            kms_key_id=settings.s3_sse_kms_key_id,
            timeouts=(settings.s3_connect_timeout, settings.s3_read_timeout),
            attempts=settings.s3_max_attempts,
            addressing_style=settings.s3_addressing_style,
        )

    def put(self, request: PutRequest) -> ObjectInfo:
        md5_b64 = base64.b64encode(bytes.fromhex(request.md5_hex)).decode()
        with open(request.path, "rb") as body, _translated(request.key):
            reply = self._client.put_object(
                Bucket=self.bucket,
                Key=request.key,
                Body=body,
                ContentType=request.content_type,
                ContentDisposition=request.content_disposition,
                ContentMD5=md5_b64,
                Metadata=request.metadata,
                **self._encryption,
            )
        # The store checked the body against Content-MD5 (a mismatch is BadDigest). The ETag
        # is a second check where it is the MD5: not under SSE-KMS, or SSE-C.
        etag_is_md5 = (
            reply.get("ServerSideEncryption") not in _ETAG_NOT_MD5
            and "SSECustomerAlgorithm" not in reply
        )
        if etag_is_md5 and reply["ETag"].strip('"') != request.md5_hex:
            raise StorageIntegrityError(f"{request.key}: store ETag {reply['ETag']} != md5")
        # The store's own clock from the PUT's reply (its Date header is the object's
        # Last-Modified to the second), which spares a HEAD per object.
        date = reply.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        return ObjectInfo(
            key=request.key,
            size=request.path.stat().st_size,
            etag=request.md5_hex,
            last_modified=parsedate_to_datetime(date) if date else datetime.now(UTC),
            content_type=request.content_type,
            metadata=request.metadata,
        )

    def head(self, key: str) -> ObjectInfo:
        with _translated(key):
            reply = self._client.head_object(Bucket=self.bucket, Key=key)
        return ObjectInfo(
            key=key,
            size=reply["ContentLength"],
            etag=reply["ETag"].strip('"'),
            last_modified=reply["LastModified"],
            content_type=reply.get("ContentType", ""),
            metadata=reply.get("Metadata", {}),
        )

    def download(self, key: str, destination: Path) -> None:
        """One GET streamed to ``destination`` (objects here are at most MAX_UPLOAD_MB):
        ``download_file`` would add a HEAD and a thread pool for every object."""
        with _translated(key), open(destination, "wb") as out:
            body = self._client.get_object(Bucket=self.bucket, Key=key)["Body"]
            try:
                shutil.copyfileobj(body, out, 256 * 1024)
            finally:
                body.close()

    def delete(self, key: str) -> None:
        reply = self._send(self._http, "DELETE", f"{self._base}/{_path(key)}")
        if reply.status_code >= 300 and _error(reply)[0] not in _NOT_FOUND:
            raise _failure(reply)

    def presign_get(self, key: str, ttl: int, filename: str | None = None) -> str:
        """A SigV4 query-signed GET URL for the host clients use (S3_PUBLIC_ENDPOINT_URL);
        with ``filename``, the store answers with that name in Content-Disposition
        (``response-content-disposition``, part of the signature), whatever it was at push.

        Signed with botocore's own presigner (``S3SigV4QueryAuth``, what
        ``generate_presigned_url`` uses) but without the client's per-call endpoint resolution
        and event hooks, which cost ~0.3 ms a URL: a listing of 100 files signs 100 of them.
        """
        url = f"{self._public_base}/{_path(key)}"
        if filename is not None:
            url += "?response-content-disposition=" + quote(content_disposition(filename), safe="")
        request = AWSRequest(method="GET", url=url)
        S3SigV4QueryAuth(self._credentials(), "s3", self._region, expires=ttl).add_auth(request)
        return request.url

    def health(self) -> None:
        url = self._base if self._endpoint else f"{self._base}/"
        reply = self._send(self._probe_http, "HEAD", url)
        if reply.status_code >= 300:
            raise _failure(reply)

    def _session(self):
        if self._botocore_session is None:
            import botocore.session

            self._botocore_session = botocore.session.Session()
        return self._botocore_session

    def _credentials(self):
        """botocore's credential chain. Its first link, the environment, is asked directly:
        the full chain (shared files, SSO, instance roles) needs a botocore session, whose
        import costs an API process ~3 MiB, so it is built only when the environment has no
        keys."""
        if self._credential_source is None:
            from botocore.credentials import EnvProvider

            self._credential_source = EnvProvider().load() or self._session().get_credentials()
        if self._credential_source is None:
            raise StorageUnavailable("S3 credentials are missing")
        return self._credential_source.get_frozen_credentials()

    def _send(self, http: URLLib3Session, method: str, url: str) -> AWSResponse:
        """One request signed with SigV4 (headers), sent on ``http``'s connection pool."""
        request = AWSRequest(method=method, url=url)
        S3SigV4Auth(self._credentials(), "s3", self._region).add_auth(request)
        try:
            return http.send(request.prepare())
        except BotoCoreError as exc:
            raise StorageUnavailable(f"S3 unreachable: {exc}") from None

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (operators and tests)."""
        with _translated(None):
            try:
                self._client.head_bucket(Bucket=self.bucket)
            except ClientError:
                self._client.create_bucket(Bucket=self.bucket)


def _path(key: str) -> str:
    return quote(key, safe="/~")


def _error(reply: AWSResponse) -> tuple[str, str]:
    """The S3 error code and message of a failed reply (HEAD replies have no body)."""
    try:
        root = ElementTree.fromstring(reply.content)
    except ElementTree.ParseError:
        return str(reply.status_code), f"HTTP {reply.status_code}"
    return root.findtext("Code") or str(reply.status_code), root.findtext("Message") or ""


def _failure(reply: AWSResponse) -> StorageError:
    code, message = _error(reply)
    if code == "403" or code == "404":  # a HEAD: no body to name the error
        code = {"403": "AccessDenied", "404": "NoSuchBucket"}[code]
    return _classified(reply.status_code, code, message or f"HTTP {reply.status_code}")


def _classified(status: int, code: str, message: str) -> StorageError:
    """Server errors, timeouts and throttling pass; any other client error will not."""
    text = f"S3 {code or status}: {message}"
    if 400 <= status < 500 and status not in (408, 429) and code not in _PASSING:
        return StorageRefused(text)
    return StorageUnavailable(text)


@contextmanager
def _translated(key: str | None) -> Iterator[None]:
    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        if key is not None and code in _NOT_FOUND:
            raise FileNotFoundError(key) from None
        if code in {"BadDigest", "InvalidDigest"}:
            raise StorageIntegrityError(f"{key}: {code}") from None
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500)
        raise _classified(status, code, str(error.get("Message", exc))) from None
    except BotoCoreError as exc:
        raise StorageUnavailable(f"S3 unreachable: {exc}") from None
