"""Uploading files to the service as a program does: small files in one multipart request,
large ones by the direct path (docs/API.md, "Direct uploads"), resumable.

A direct upload keeps a checkpoint (``<state dir>/<key>.json``: the service's URL, the upload
id, the part size, each part's sha256, the file's path, size and modification time). Run again
after Ctrl-C, a crash or a network cut, it asks the service which parts it has (its ledger is
the truth) and sends only the others; a file changed since its checkpoint starts over, saying
so. Ctrl-C never aborts an upload: ``abort`` does.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

#: Files up to this size go in one multipart request (the API's MAX_UPLOAD_MB is 16 by default).
SMALL = 8 * 1024 * 1024
#: Parts sent at once.
PARTS_AT_ONCE = 4
CHUNK = 1024 * 1024


class UploadFailed(Exception):
    """The service refused or could not be reached: the message says what to do."""


@dataclass
class Client:
    url: str
    token: str
    state_dir: Path
    #: At most this many bytes a second per part (0: no limit), as curl's --limit-rate.
    limit_rate: int = 0
    say: Callable[[str], None] = print

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {self.token}"

    # -- the API -------------------------------------------------------------------------------

    def _call(self, method: str, path: str, **kwargs) -> requests.Response:
        try:
            reply = self.http.request(method, self.url + path, timeout=60, **kwargs)
        except requests.RequestException as exc:
            raise UploadFailed(f"{self.url} cannot be reached: {exc}") from None
        if reply.status_code >= 400 and reply.status_code != 404:
            raise UploadFailed(f"{method} {path}: {reply.status_code} {reply.text.strip()}")
        return reply

    # -- uploading -----------------------------------------------------------------------------

    def upload(
        self,
        path: Path,
        *,
        tags: Iterable[str] = (),
        category: str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        """Upload ``path``; the service's file object. ``progress(n)``: n more bytes sent."""
        size = path.stat().st_size
        if size <= SMALL:
            return self._small(path, list(tags), category, progress)
        return self._direct(path, size, list(tags), category, progress)

    def _small(self, path, tags, category, progress) -> dict[str, Any]:
        form = [("tags", tag) for tag in tags] + ([("category", category)] if category else [])
        with open(path, "rb") as handle:
            reply = self._call(
                "POST", "/api/v2/files", files={"file": (path.name, handle)}, data=form
            )
        if progress:
            progress(path.stat().st_size)
        return reply.json()

    def _direct(self, path, size, tags, category, progress) -> dict[str, Any]:
        checkpoint = self._checkpoint(path)
        upload = self._resumable(checkpoint, path)
        if upload is None:
            declared = {"filename": path.name, "size": size, "tags": tags}
            if category:
                declared["category"] = category
            part_size = self._call("GET", "/api/v2").json()["upload_part_size"]
            whole, digests = _digests(path, part_size)
            created = self._call(
                "POST",
                "/api/v2/uploads",
                json=declared | {"sha256": whole, "part_sha256": digests},
            )
            upload = created.json()
            checkpoint.write_text(
                json.dumps(
                    {
                        "url": self.url,
                        "upload_id": upload["upload_id"],
                        "part_size": part_size,
                        "part_sha256": digests,
                        "path": str(path.resolve()),
                        "size": size,
                        "mtime_ns": path.stat().st_mtime_ns,
                    }
                )
            )
            state = self._call("GET", f"/api/v2/uploads/{upload['upload_id']}").json()
        else:
            state = upload
        upload_id = state["upload_id"]
        have = [p for p in state["parts"] if p["received"]]
        todo = [p["part_number"] for p in state["parts"] if not p["received"]]
        if have:
            self.say(f"{path.name}: resuming, {len(have)} of {len(state['parts'])} parts are there")
        if progress:
            progress(sum(p["size"] for p in have))
        if todo:
            urls = self._call(
                "POST", f"/api/v2/uploads/{upload_id}/parts", json={"part_numbers": todo}
            ).json()["parts"]
            with ThreadPoolExecutor(PARTS_AT_ONCE) as pool:
                for _ in pool.map(lambda part: self._send(path, state, part, progress), urls):
                    pass
        done = self._call("POST", f"/api/v2/uploads/{upload_id}/complete")
        checkpoint.unlink(missing_ok=True)
        return done.json()["file"]

    def _send(self, path: Path, state: dict, part: dict, progress) -> None:
        offset = (part["part_number"] - 1) * state["part_size"]
        body = _PartReader(path, offset, part["size"], self.limit_rate, progress)
        # The headers the URL's signature covers (the length; on S3 the part's checksum too).
        headers = part.get("headers", {}) | {"Content-Length": str(part["size"])}
        try:
            reply = requests.put(part["url"], data=body, headers=headers, timeout=300)
        except requests.RequestException as exc:
            raise UploadFailed(f"part {part['part_number']}: {exc}") from None
        if reply.status_code != 200:
            raise UploadFailed(f"part {part['part_number']}: {reply.status_code} {reply.text}")

    # -- checkpoints ---------------------------------------------------------------------------

    def _checkpoint(self, path: Path) -> Path:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        key = hashlib.sha256(f"{self.url} {path.resolve()}".encode()).hexdigest()[:32]
        return self.state_dir / f"{key}.json"

    def _resumable(self, checkpoint: Path, path: Path) -> dict[str, Any] | None:
        """The service's state of the checkpointed upload of ``path``, if it can go on."""
        if not checkpoint.exists():
            return None
        saved = json.loads(checkpoint.read_text())
        stat = path.stat()
        if (saved["size"], saved["mtime_ns"]) != (stat.st_size, stat.st_mtime_ns):
            self.say(f"{path.name} changed since its upload began: starting over")
            self._call("DELETE", f"/api/v2/uploads/{saved['upload_id']}")
            checkpoint.unlink()
            return None
        state = self._call("GET", f"/api/v2/uploads/{saved['upload_id']}")
        if state.status_code == 404 or state.json()["state"] == "aborted":
            self.say(f"{path.name}: its upload is gone (aborted or expired): starting over")
            checkpoint.unlink()
            return None
        return state.json()

    def abort(self, path: Path) -> bool:
        """Abort the checkpointed upload of ``path``: whether there was one."""
        checkpoint = self._checkpoint(path)
        if not checkpoint.exists():
            return False
        saved = json.loads(checkpoint.read_text())
        self._call("DELETE", f"/api/v2/uploads/{saved['upload_id']}")
        checkpoint.unlink()
        return True


def _digests(path: Path, part_size: int) -> tuple[str, list[str]]:
    """The file's sha256 and each part's, in one read."""
    whole, parts = hashlib.sha256(), []
    with open(path, "rb") as handle:
        while block := handle.read(part_size):
            whole.update(block)
            parts.append(hashlib.sha256(block).hexdigest())
    return whole.hexdigest(), parts


class _PartReader:
    """A part of a file as a request body: read a chunk at a time (never whole in memory),
    reporting progress, at most ``rate`` bytes a second when given."""

    def __init__(self, path: Path, offset: int, size: int, rate: int, progress) -> None:
        self.path, self.offset, self.size = path, offset, size
        self.rate, self.progress = rate, progress
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        started = time.monotonic()
        sent = 0
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            while sent < self.size:
                chunk = handle.read(min(CHUNK, self.size - sent))
                if not chunk:
                    raise UploadFailed(f"{self.path} became shorter while it was sent")
                yield chunk
                sent += len(chunk)
                if self.progress:
                    self.progress(len(chunk))
                if self.rate:
                    ahead = sent / self.rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)


def default_state_dir() -> Path:
    return Path(
        os.environ.get("UPLOAD_PIPELINE_STATE")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "upload-pipeline"
    )
