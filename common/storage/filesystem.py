"""The embedded default store: objects as files under STORAGE_DIR, served by the API itself.

Each object ``<key>`` has a sidecar ``<key>.json`` with what S3 would keep beside it (type,
disposition, metadata, etag). Presigned URLs are host-relative paths signed with SECRET_KEY
(HMAC-SHA256 over key and expiry); the API's ``/storage/<key>`` route checks them.

Durability: an object and then its sidecar are each written to ``.tmp/``, fsynced, renamed into
place, and the directory fsynced, so a stored object survives a power loss; an object without
a (complete) sidecar counts as absent and is pushed again. ``sweep`` removes what a writer
killed mid-write left in ``.tmp/``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

from common.naming import is_generated_name
from common.storage import ObjectInfo, PutRequest, StorageIntegrityError, StorageUnavailable

SERVE_PREFIX = "/storage/"
TEMPORARY = ".tmp"


class FilesystemStorage:
    serves_signed_urls = True  # by the API's /storage/<key> route
    multipart = False  # a direct upload's parts go to URLs the API serves
    bucket = None

    def __init__(self, root: str | Path, secret_key: str) -> None:
        self.root = Path(root).absolute()
        self._secret = secret_key.encode()

    def _path(self, key: str) -> Path:
        if not is_generated_name(key):  # keys are generated names; nothing else maps to a path
            raise FileNotFoundError(key)
        return self.root / key

    def put(self, request: PutRequest) -> ObjectInfo:
        target = self._path(request.key)
        try:
            (self.root / TEMPORARY).mkdir(parents=True, exist_ok=True)
            md5 = _copy_atomically(request.path, target)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise StorageUnavailable(f"filesystem store: {exc}") from None
        if md5 != request.md5_hex:
            target.unlink(missing_ok=True)
            raise StorageIntegrityError(f"{request.key}: stored md5 {md5} != {request.md5_hex}")
        sidecar = {
            "content_type": request.content_type,
            "content_disposition": request.content_disposition,
            "metadata": request.metadata,
            "etag": md5,
        }
        _write_atomically(target.with_name(target.name + ".json"), json.dumps(sidecar).encode())
        return self.head(request.key)

    def head(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            sidecar = self.sidecar(key)
            stat = path.stat()
        except FileNotFoundError:
            raise FileNotFoundError(key) from None
        return ObjectInfo(
            key=key,
            size=stat.st_size,
            etag=sidecar["etag"],
            last_modified=datetime.fromtimestamp(int(stat.st_mtime), UTC),
            content_type=sidecar["content_type"],
            metadata=sidecar["metadata"],
        )

    def sidecar(self, key: str) -> dict:
        """What is kept beside the object; ``FileNotFoundError`` when missing or incomplete."""
        path = self._path(key)
        try:
            return json.loads(path.with_name(path.name + ".json").read_bytes())
        except ValueError:  # an empty or cut sidecar: the object was never completely stored
            raise FileNotFoundError(key) from None

    def object_path(self, key: str) -> Path:
        return self._path(key)

    def download(self, key: str, destination: Path) -> None:
        shutil.copyfile(self._path(key), destination)

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".json").unlink(missing_ok=True)

    def presign_get(self, key: str, ttl: int, filename: str | None = None) -> str:
        """A URL served by the API (``/storage/...``); with ``filename``, signed with it, the
        name its Content-Disposition gives."""
        expires = int(time.time()) + ttl
        params = {"expires": expires}
        if filename is not None:
            params["filename"] = filename
        params["signature"] = self._sign(key, expires, filename)
        return f"{SERVE_PREFIX}{key}?{urlencode(params)}"

    def verify(self, key: str, expires: str, signature: str, filename: str | None = None) -> bool:
        """True when ``signature`` was made by ``presign_get`` for ``key`` (and ``filename``)
        and has not expired."""
        try:
            deadline = int(expires)
        except ValueError:
            return False
        given = signature.encode("utf-8", "surrogateescape")  # any text a client may send
        return deadline >= time.time() and hmac.compare_digest(
            self._sign(key, deadline, filename).encode(), given
        )

    def _sign(self, key: str, expires: int, filename: str | None = None) -> str:
        message = f"{key}\n{expires}".encode()
        if filename is not None:
            message += b"\n" + filename.encode("utf-8", "surrogateescape")
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def prepare(self) -> None:
        """Nothing to load ahead: files need no client."""

    def ensure_bucket(self) -> None:
        (self.root / TEMPORARY).mkdir(parents=True, exist_ok=True)

    def sweep(self, older_than: float) -> int:
        """Remove temporary files of writes interrupted ``older_than`` seconds ago or more."""
        removed = 0
        cutoff = time.time() - older_than
        try:
            entries = list(os.scandir(self.root / TEMPORARY))
        except FileNotFoundError:
            return 0
        for entry in entries:
            try:
                if entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    def health(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=self.root, prefix=".health-")  # noqa: SIM115
            probe.close()
        except OSError as exc:
            raise StorageUnavailable(f"filesystem store: {exc}") from None


def _copy_atomically(source: Path, target: Path) -> str:
    """Copy ``source`` to ``target`` durably; return the md5 of what was written."""
    digest = hashlib.md5(usedforsecurity=False)

    def copy(out) -> None:
        with open(source, "rb") as src:
            while chunk := src.read(1024 * 1024):
                digest.update(chunk)
                out.write(chunk)

    _replace_durably(target, copy)
    return digest.hexdigest()


def _write_atomically(target: Path, data: bytes) -> None:
    _replace_durably(target, lambda out: out.write(data))


def _replace_durably(target: Path, fill) -> None:
    """Write ``target`` through a temporary file in ``.tmp/``: filled, fsynced, renamed into
    place, then the directory fsynced. A crash leaves the old file or the new one, never part."""
    fd, tmp = tempfile.mkstemp(dir=target.parent / TEMPORARY, prefix="put-")
    try:
        with os.fdopen(fd, "wb") as out:
            fill(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(target.parent)


def fsync_directory(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable (its directory entry reaches the disk)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
