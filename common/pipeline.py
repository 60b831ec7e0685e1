"""The life of a file (SPEC §3): accept, ingest (verify and push), extract metadata, delete.

Every state change is a conditional UPDATE on the file's current status, so a redelivered task,
two workers racing on one file, or a delete racing a push all end in one final state; the loser
only finishes the bookkeeping (and removes an object it pushed for a file deleted meanwhile).
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import update
from sqlalchemy.orm import Session

from common import outbox
from common.db import Database
from common.models import OPEN_STATES, File, FileStatus, OutboxKind, utcnow
from common.naming import CANONICAL_TYPES
from common.queue import Publisher
from common.settings import Settings
from common.staging import StagedUpload, remove_staged, staged_path
from common.storage import PutRequest, Storage, StorageUnavailable, ascii_metadata

log = logging.getLogger(__name__)


def iso_z(moment: datetime, *, millis: bool = False) -> str:
    """ISO 8601 in UTC with a ``Z``, as the seed writes times."""
    text = moment.replace(tzinfo=None).isoformat(timespec="milliseconds" if millis else "seconds")
    return text + "Z"


def seed_metadata(file: File) -> dict[str, str]:
    """The metadata the seed shows on every file, as strings (it is also the S3 user metadata)."""
    return {
        "original_name": file.original_name,
        "upload_time": iso_z(file.uploaded_at, millis=True),
        "file_size": str(file.size),
        "content_type": file.content_type,
    }


@dataclass
class Pipeline:
    settings: Settings
    db: Database
    storage: Storage
    publisher: Publisher
    marks: outbox.PublishMarks = field(init=False)

    def __post_init__(self) -> None:
        self.marks = outbox.PublishMarks(self.db)
        atexit.register(self.marks.flush)

    def close(self) -> None:
        """Record pending publish marks, then release database and broker connections."""
        self.marks.close()
        self.db.dispose()
        self.publisher.close()

    # -- API side ---------------------------------------------------------------------------

    def accept(self, staged: StagedUpload) -> File:
        """Record a staged upload with its outbox entry in one transaction, then publish."""
        file = File(
            name=staged.name,
            original_name=staged.original_name,
            extension=staged.extension,
            size=staged.size,
            content_type=CANONICAL_TYPES[staged.extension],
            status=FileStatus.PENDING,
            sha256=staged.sha256,
            extra={},
            uploaded_at=staged.uploaded_at,
        )
        try:
            with self.db.session() as session:
                session.add(file)
                session.flush()
                outbox.add(session, file.id, OutboxKind.INGEST)
        except BaseException:
            remove_staged(staged.path)  # no row, no staged file
            raise
        self.publish(file.id, OutboxKind.INGEST)
        return file

    def publish(self, file_id: int, kind: OutboxKind) -> bool:
        """Send the task for an outbox entry; mark it published if the broker took it."""
        if not self.publisher.send(outbox.TASK_FOR_KIND[kind], file_id):
            return False
        self.marks.add(file_id, kind)
        return True

    def delete(self, name: str) -> bool:
        """Mark a file deleted and remove its object; False when there is no such live file."""
        with self.db.session() as session:
            file = session.query(File).filter_by(name=name).one_or_none()
            if file is None or not _transition(session, file.id, None, FileStatus.DELETED):
                return False
            outbox.add(session, file.id, OutboxKind.DELETE)
            file_id = file.id
        remove_staged(staged_path(self.settings.staging_dir, name))
        try:
            self.storage.delete(name)
        except StorageUnavailable as exc:
            log.warning("object %s not removed yet, left to a worker: %s", name, exc)
            self.publish(file_id, OutboxKind.DELETE)
            return True
        with self.db.session() as session:
            outbox.done(session, file_id, OutboxKind.DELETE)
        return True

    # -- worker side ------------------------------------------------------------------------

    def ingest(self, file_id: int) -> FileStatus | None:
        """Verify a staged file and push it to the store; returns the file's final status.

        Raises ``StorageUnavailable`` (and database errors) for the task to retry.
        """
        with self.db.session() as session:
            # Claim and load in one statement; only a file that is not open needs a second look.
            file = session.scalars(
                update(File)
                .where(File.id == file_id, File.status.in_(OPEN_STATES))
                .values(
                    status=FileStatus.PROCESSING,
                    attempts=File.attempts + 1,
                    updated_at=utcnow(),
                )
                .returning(File)
            ).one_or_none()
            if file is None:
                file = session.get(File, file_id)
                if file is None:
                    return None
        if file.status not in OPEN_STATES:
            return self._settle(file)
        try:
            return self._verify_and_push(file)
        except FileNotFoundError:  # the staged copy vanished: another delivery finished first
            return self._recover_missing_stage(file)

    def _verify_and_push(self, file: File) -> FileStatus:
        from common.sniff import check_content  # libmagic and Pillow: loaded by workers only

        path = staged_path(self.settings.staging_dir, file.name)
        verdict = check_content(
            path, file.extension, max_image_pixels=self.settings.max_image_pixels
        )
        if not verdict.ok:
            return self._finish(
                file, FileStatus.REJECTED, error=verdict.reason, content_type=verdict.detected
            )
        sha256, md5 = _digests(path)
        if sha256 != file.sha256:
            return self._finish(
                file, FileStatus.FAILED, error="Промежуточная копия файла повреждена"
            )
        info = self.storage.put(
            PutRequest(
                key=file.name,
                path=path,
                content_type=_served_type(file.content_type),
                original_name=file.original_name,
                md5_hex=md5,
                metadata=ascii_metadata(seed_metadata(file) | {"sha256": sha256}),
            )
        )
        return self._finish(
            file, FileStatus.STORED, md5=md5, etag=info.etag, stored_at=info.last_modified
        )

    def fail(self, file_id: int, reason: str) -> None:
        """After the last retry the file ends ``failed`` with the reason; its bytes stay staged."""
        with self.db.session() as session:
            if _transition(session, file_id, OPEN_STATES, FileStatus.FAILED, error=reason):
                outbox.done(session, file_id, OutboxKind.INGEST)

    def requeue_failed(self, file_id: int) -> bool:
        """Put a ``failed`` file back in the pipeline (operator command, beat)."""
        with self.db.session() as session:
            if not _transition(
                session, file_id, (FileStatus.FAILED,), FileStatus.PENDING, error=None
            ):
                return False
            outbox.add(session, file_id, OutboxKind.INGEST)
        self.publish(file_id, OutboxKind.INGEST)
        return True

    def extract(self, file_id: int) -> None:
        """Add parsed metadata (dimensions, pages, ...) to a stored file."""
        with self.db.session() as session:
            file = session.get(File, file_id)
        if file is None or file.status != FileStatus.STORED:
            self._drop(file_id, OutboxKind.METADATA)
            return
        from common.extract import extract_metadata  # Pillow and pypdf: workers only

        with tempfile.TemporaryDirectory(prefix="extract-") as tmp:
            local = Path(tmp) / file.name
            try:
                self.storage.download(file.name, local)
            except FileNotFoundError:
                self._drop(file_id, OutboxKind.METADATA)
                return
            found = extract_metadata(
                local, file.extension, max_image_pixels=self.settings.max_image_pixels
            )
        with self.db.session() as session:
            session.execute(
                update(File)
                .where(File.id == file_id, File.status == FileStatus.STORED)
                .values(extra=(file.extra or {}) | found)
            )
            outbox.done(session, file_id, OutboxKind.METADATA)

    def delete_object(self, file_id: int) -> None:
        """Remove the object of a deleted file (retried by the task while the store is down)."""
        with self.db.session() as session:
            file = session.get(File, file_id)
        if file is not None and file.status == FileStatus.DELETED:
            self.storage.delete(file.name)
            remove_staged(staged_path(self.settings.staging_dir, file.name))
        self._drop(file_id, OutboxKind.DELETE)

    # -- helpers ----------------------------------------------------------------------------

    def _finish(self, file: File, status: FileStatus, **values) -> FileStatus:
        """Move an open file to its final state; whoever loses the race settles what it found."""
        with self.db.session() as session:
            won = _transition(session, file.id, OPEN_STATES, status, **values)
            if won and status == FileStatus.STORED:
                outbox.hand_over(session, file.id, OutboxKind.INGEST, OutboxKind.METADATA)
            elif won:
                outbox.done(session, file.id, OutboxKind.INGEST)
            current = None if won else session.get(File, file.id)
        if not won:
            return self._settle(current)
        if status != FileStatus.FAILED:
            remove_staged(staged_path(self.settings.staging_dir, file.name))
        if status == FileStatus.STORED:
            self.publish(file.id, OutboxKind.METADATA)
        return status

    def _settle(self, file: File) -> FileStatus:
        """Bookkeeping for a file some other delivery already finished (or that was deleted)."""
        if file.status == FileStatus.DELETED:
            self.storage.delete(file.name)  # a push that raced the delete leaves no object
        if file.status in (FileStatus.DELETED, FileStatus.REJECTED, FileStatus.STORED):
            remove_staged(staged_path(self.settings.staging_dir, file.name))
        if file.status != FileStatus.FAILED:
            self._drop(file.id, OutboxKind.INGEST)
        return file.status

    def _recover_missing_stage(self, file: File) -> FileStatus:
        """No staged bytes: an earlier delivery may have pushed them; the store's copy decides."""
        with self.db.session() as session:
            current = session.get(File, file.id)
        if current.status not in OPEN_STATES:
            return self._settle(current)
        try:
            info = self.storage.head(file.name)
        except FileNotFoundError:
            return self._finish(file, FileStatus.FAILED, error="Промежуточная копия файла утеряна")
        if info.metadata.get("sha256") != file.sha256:
            return self._finish(file, FileStatus.FAILED, error="Промежуточная копия файла утеряна")
        return self._finish(
            file, FileStatus.STORED, etag=info.etag, stored_at=info.last_modified, md5=info.etag
        )

    def keep_alive(self, file_id: int, kind: OutboxKind) -> None:
        """A task is retrying: its outbox entry is not stale."""
        with self.db.session() as session:
            outbox.touch(session, file_id, kind)

    def _drop(self, file_id: int, kind: OutboxKind) -> None:
        with self.db.session() as session:
            outbox.done(session, file_id, kind)


def _transition(
    session: Session,
    file_id: int,
    from_states: tuple[FileStatus, ...] | None,
    to: FileStatus,
    *,
    attempts: bool = False,
    **values,
) -> bool:
    """Conditionally move a file to ``to``; ``from_states=None`` means from any live state."""
    allowed = from_states or tuple(s for s in FileStatus if s != FileStatus.DELETED)
    values = {"status": to, "updated_at": utcnow(), **values}
    if attempts:
        values["attempts"] = File.attempts + 1
    result = session.execute(
        update(File).where(File.id == file_id, File.status.in_(allowed)).values(**values)
    )
    return result.rowcount == 1


def _digests(path: Path) -> tuple[str, str]:
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(1024 * 1024):
            sha256.update(chunk)
            md5.update(chunk)
    return sha256.hexdigest(), md5.hexdigest()


def _served_type(content_type: str) -> str:
    return "text/plain; charset=utf-8" if content_type == "text/plain" else content_type
