"""Intake: accept an upload (row and outbox entry in one transaction, then publish), delete a
file (and its object, here or through a worker), put a failed file back in the pipeline."""

from __future__ import annotations

import logging

from sqlalchemy import ColumnElement

from common import outbox
from common.models import File, FileStatus, OutboxKind
from common.pipeline.base import Stage
from common.registry import KINDS
from common.staging import StagedUpload, remove_staged, staged_path
from common.states import transition
from common.storage import StorageError, StorageRefused

log = logging.getLogger(__name__)


class Intake(Stage):
    def accept(self, staged: StagedUpload, owner_id: int | None = None) -> File:
        """Record a staged upload with its outbox entry in one transaction, then publish."""
        file = File(
            owner_id=owner_id,
            name=staged.name,
            original_name=staged.original_name,
            extension=staged.extension,
            size=staged.size,
            content_type=KINDS[staged.extension].canonical_type,
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

    def delete(self, name: str, visible: ColumnElement[bool] | None = None) -> bool:
        """Mark a file deleted and remove its object; False when there is no such live file
        (among those ``visible`` selects, when given: the caller's)."""
        with self.db.session() as session:
            query = session.query(File).filter_by(name=name)
            if visible is not None:
                query = query.filter(visible)
            file = query.one_or_none()
            if file is None or not transition(session, file.id, FileStatus.DELETED):
                return False
            outbox.add(session, file.id, OutboxKind.DELETE)
            file_id = file.id
        remove_staged(staged_path(self.settings.staging_dir, name))
        try:
            self.storage.delete(name)
        except StorageError as exc:
            log.warning("object %s not removed yet, left to a worker: %s", name, exc)
            self.publish(file_id, OutboxKind.DELETE)
            return True
        with self.db.session() as session:
            outbox.done(session, file_id, OutboxKind.DELETE)
        return True

    def requeue_failed(self, file_id: int) -> bool:
        """Put a ``failed`` file back in the pipeline (operator command, beat)."""
        with self.db.session() as session:
            if not transition(
                session, file_id, FileStatus.PENDING, File.status == FileStatus.FAILED, error=None
            ):
                return False
            outbox.add(session, file_id, OutboxKind.INGEST)
        self.publish(file_id, OutboxKind.INGEST)
        return True

    def delete_object(self, file_id: int) -> None:
        """Remove the object of a deleted file (retried by the task while the store is down)."""
        with self.db.session() as session:
            file = session.get(File, file_id)
        if file is not None and file.status == FileStatus.DELETED:
            try:
                self.storage.delete(file.name)
            except StorageRefused as exc:  # retrying forever would not change it
                log.error("object %s of a deleted file cannot be removed: %s", file.name, exc)
            remove_staged(staged_path(self.settings.staging_dir, file.name))
        self._drop(file_id, OutboxKind.DELETE)
