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
import socket
import threading
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote
from xml.sax.saxutils import escape

from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest, AWSResponse
from botocore.exceptions import BotoCoreError, ClientError
from botocore.httpsession import URLLib3Session

from common.settings import Settings
from common.staging import DIRECT_PREFIX
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
        # TCP_NODELAY, as botocore's clients set it (its bare session does not): urllib3 writes
        # a request's headers and body separately, and Nagle's algorithm would hold the body
        # until the store's delayed ACK, ~40 ms a request with a body (complete a multipart).
        nodelay = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
        self._http = URLLib3Session(
            timeout=timeouts, max_pool_connections=_MAX_CONNECTIONS, socket_options=nodelay
        )
        self._probe_http = URLLib3Session(
            timeout=(1, 1.5), max_pool_connections=2, socket_options=nodelay
        )
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

    # -- multipart uploads straight from clients (common/files/direct.py) ----------------------

    multipart = True

    def start_multipart(self, key: str, content_type: str) -> str:
        """Begin a multipart upload of ``key``: the store's UploadId."""
        url = f"{self._base}/{_path(key)}?uploads"
        headers = {"Content-Type": content_type} | self._encryption_headers()
        reply = self._answered(self._send(self._http, "POST", url, b"", headers))
        upload_id = _xml(reply).findtext(f"{_NS}UploadId")
        if not upload_id:
            raise StorageUnavailable(f"S3 gave no UploadId for {key}")
        return upload_id

    def sign_part(
        self, key: str, upload_id: str, number: int, size: int, sha256: str | None, ttl: int
    ) -> tuple[str, dict[str, str]]:
        """A presigned PUT URL for one part, and the headers the client must send with it. The
        signature covers the part's length and, when it is known, its ``x-amz-checksum-sha256``:
        the store refuses a shorter, longer or other body, as it refuses the URL once expired or
        used for another part."""
        query = f"partNumber={number}&uploadId={quote(upload_id, safe='')}"
        headers = {"Content-Length": str(size)}
        if sha256:
            headers["x-amz-checksum-sha256"] = base64.b64encode(bytes.fromhex(sha256)).decode()
        request = AWSRequest(
            method="PUT", url=f"{self._public_base}/{_path(key)}?{query}", headers=dict(headers)
        )
        S3SigV4QueryAuth(self._credentials(), "s3", self._region, expires=ttl).add_auth(request)
        return request.url, headers

    def list_parts(self, key: str, upload_id: str) -> dict[int, tuple[int, str]]:
        """The parts the store holds: number -> (size, ETag). ``FileNotFoundError`` when the
        store has no such upload (completed or aborted)."""
        parts: dict[int, tuple[int, str]] = {}
        marker = 0
        while True:
            url = f"{self._base}/{_path(key)}?part-number-marker={marker}"
            url += f"&uploadId={quote(upload_id, safe='')}"
            reply = self._send(self._http, "GET", url)
            if reply.status_code == 404 or _error(reply)[0] == "NoSuchUpload":
                raise FileNotFoundError(key)
            root = _xml(self._answered(reply))
            for part in root.iter(f"{_NS}Part"):
                number = int(part.findtext(f"{_NS}PartNumber"))
                parts[number] = (int(part.findtext(f"{_NS}Size")), part.findtext(f"{_NS}ETag"))
            if root.findtext(f"{_NS}IsTruncated") != "true":
                return parts
            marker = int(root.findtext(f"{_NS}NextPartNumberMarker") or max(parts))

    def finish_multipart(self, key: str, upload_id: str, etags: list[str], size: int) -> None:
        """Complete the upload from its parts' ETags (in part order), naming the whole size
        (``x-amz-mp-object-size``) for stores that check it. ``FileNotFoundError`` when the
        store has no such upload; an error S3 sends in a 200 reply is an error too."""
        body = "".join(
            f"<Part><PartNumber>{n}</PartNumber><ETag>{escape(etag)}</ETag></Part>"
            for n, etag in enumerate(etags, start=1)
        )
        data = f"<CompleteMultipartUpload>{body}</CompleteMultipartUpload>".encode()
        url = f"{self._base}/{_path(key)}?uploadId={quote(upload_id, safe='')}"
        headers = {"Content-Type": "application/xml", "x-amz-mp-object-size": str(size)}
        reply = self._send(self._http, "POST", url, data, headers)
        if _error(reply)[0] == "NoSuchUpload":
            raise FileNotFoundError(key)
        root = _xml(self._answered(reply))
        if root.tag == f"{_NS}Error":
            code, message = root.findtext(f"{_NS}Code"), root.findtext(f"{_NS}Message")
            raise _classified(500, code or "", message or "")

    def abort_multipart(self, key: str, upload_id: str) -> None:
        """Abort the upload and free its parts; one the store no longer has is not an error."""
        url = f"{self._base}/{_path(key)}?uploadId={quote(upload_id, safe='')}"
        reply = self._send(self._http, "DELETE", url)
        if reply.status_code >= 300 and _error(reply)[0] not in _NOT_FOUND | {"NoSuchUpload"}:
            raise _failure(reply)

    def copy(self, source: str, request: PutRequest, size: int) -> ObjectInfo:
        """Copy ``source`` to ``request.key`` inside the store (the bytes never leave it), with
        the object's type, disposition and metadata; above 5 GiB boto3 copies it in parts
        (``UploadPartCopy``)."""
        from boto3.s3.transfer import TransferConfig

        extra = {
            "ContentType": request.content_type,
            "ContentDisposition": request.content_disposition,
            "Metadata": request.metadata,
            "MetadataDirective": "REPLACE",
        } | self._encryption
        with _translated(source):
            self._client.copy(
                {"Bucket": self.bucket, "Key": source},
                self.bucket,
                request.key,
                ExtraArgs=extra,
                Config=TransferConfig(multipart_threshold=5 * 1024**3, use_threads=False),
            )
        info = self.head(request.key)
        if info.size != size:
            raise StorageIntegrityError(f"{request.key}: copied {info.size} bytes, not {size}")
        return info

    def configure_direct_uploads(self, origins: list[str], abort_after_days: int) -> dict:
        """The bucket's rules for direct uploads (operators' ``create-bucket``): a lifecycle rule
        aborting multipart uploads under ``uploads/`` left incomplete ``abort_after_days`` (the
        second guard behind beat's expiry), and a CORS rule letting browsers of ``origins`` PUT
        parts and read their ``ETag``. Each answers ``"set"`` or why the store would not (MinIO
        has neither API: its environment sets the same, see docker-compose.yml)."""
        rules = {
            "lifecycle": lambda: self._client.put_bucket_lifecycle_configuration(
                Bucket=self.bucket,
                LifecycleConfiguration={
                    "Rules": [
                        {
                            "ID": "abort-incomplete-direct-uploads",
                            "Status": "Enabled",
                            "Filter": {"Prefix": DIRECT_PREFIX},
                            "AbortIncompleteMultipartUpload": {
                                "DaysAfterInitiation": abort_after_days
                            },
                        }
                    ]
                },
            ),
            "cors": lambda: self._client.put_bucket_cors(
                Bucket=self.bucket,
                CORSConfiguration={
                    "CORSRules": [
                        {
                            "AllowedOrigins": origins,
                            "AllowedMethods": ["GET", "PUT"],
                            "AllowedHeaders": ["*"],
                            "ExposeHeaders": ["ETag"],
                            "MaxAgeSeconds": 3600,
                        }
                    ]
                },
            ),
        }
        done = {}
        for name, apply in rules.items():
            try:
                with _translated(None):
                    apply()
                done[name] = "set"
            except StorageRefused as exc:
                done[name] = f"not set: {exc}"
        return done

    def _encryption_headers(self) -> dict[str, str]:
        names = {
            "ServerSideEncryption": "x-amz-server-side-encryption",
            "SSEKMSKeyId": "x-amz-server-side-encryption-aws-kms-key-id",
        }
        return {names[k]: v for k, v in self._encryption.items()}

    def _answered(self, reply: AWSResponse) -> AWSResponse:
        if reply.status_code >= 300:
            raise _failure(reply)
        return reply

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

    def _send(
        self,
        http: URLLib3Session,
        method: str,
        url: str,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> AWSResponse:
        """One request signed with SigV4 (headers), sent on ``http``'s connection pool."""
        request = AWSRequest(method=method, url=url, data=data, headers=headers)
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


_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def _xml(reply: AWSResponse) -> ElementTree.Element:
    """A reply's XML with S3's namespace on every element (added where a store leaves it out)."""
    root = ElementTree.fromstring(reply.content)
    for element in root.iter():
        if not element.tag.startswith("{"):
            element.tag = _NS + element.tag
    return root


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
