"""Intake: accept an upload (row and outbox entry in one transaction, then publish), delete a
file (and its object, here or through a worker), put a failed file back in the pipeline."""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from common.files import labels, outbox, states, usage
from common.files.pipeline.base import Stage
from common.files.states import transition
from common.models import File, FileStatus, OutboxKind
from common.registry import KINDS
from common.staging import StagedUpload, remove_staged, staged_path
from common.storage import StorageError, StorageRefused
from common.tasks import DELETE_OBJECTS

log = logging.getLogger(__name__)


class _Withdrawn(Exception):
    """``accept``'s ``then`` declined: the transaction rolls back."""


class Intake(Stage):
    def accept(
        self,
        staged: StagedUpload,
        owner_id: int | None = None,
        *,
        category: str | None = None,
        tags: list[str] = (),
        reserved: bool = False,
        then: Callable[[Session, File], bool] | None = None,
    ) -> File | None:
        """Record a staged upload (with its labels, normalised) and its outbox entry in one
        transaction, then publish. ``reserved``: its bytes were taken from the owner's quota
        already (a direct upload's, at its creation). ``then(session, file)`` runs last in the
        transaction; when it answers False, nothing is kept and None is returned."""
        file = File(
            owner_id=owner_id,
            category=category,
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
                states.create(session, file, work=OutboxKind.INGEST)
                if tags:
                    ids = labels.tag_ids(session, tags)
                    labels.link(session, [(file.id, ids[tag]) for tag in tags])
                if not reserved:
                    # Last: the account's row is held from here to the commit (usage.py).
                    usage.admit(session, owner_id, staged.size, self.settings.user_quota_mb)
                if then is not None and not then(session, file):
                    raise _Withdrawn
        except _Withdrawn:
            remove_staged(staged.path)
            return None
        except BaseException:
            remove_staged(staged.path)  # no row, no staged file
            raise
        if then is not None:  # it may have settled the file already (a direct upload's)
            with self.db.reading() as session:
                file.status = session.scalar(select(File.status).where(File.id == file.id))
        if file.status == FileStatus.PENDING:
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
            outbox.replace_with_delete(session, [file.id])
            file_id = file.id
        remove_staged(staged_path(self.settings.staging_dir, name))
        try:
            self.storage.delete(name)
            self.drop_source(self.direct_source(file_id))
        except StorageError as exc:
            log.warning("object %s not removed yet, left to a worker: %s", name, exc)
            self.publish(file_id, OutboxKind.DELETE)
            return True
        with self.db.session() as session:
            outbox.done(session, file_id, OutboxKind.DELETE)
        return True

    def delete_many(self, file_ids: list[int]) -> list[int]:
        """Mark many files deleted in one transaction and leave their objects to the workers
        (one task for them all, published after commit; the outbox keeps an entry a file): a
        thousand deletes answer at once, and a store that is down loses nothing. The ids of the
        files this call deleted."""
        with self.db.session() as session:
            deleted = transition(session, file_ids, FileStatus.DELETED)
            outbox.replace_with_delete(session, deleted)
            names = dict(
                session.execute(select(File.id, File.name).where(File.id.in_(deleted))).all()
            )
        for file_id in deleted:
            remove_staged(staged_path(self.settings.staging_dir, names[file_id]))
        if deleted and self.publisher.send_batch(DELETE_OBJECTS, deleted):
            for file_id in deleted:
                self.marks.add(file_id, OutboxKind.DELETE)
        return deleted

    def requeue_failed(self, file_id: int) -> bool:
        """Put a ``failed`` file back in the pipeline (operator command, beat)."""
        with self.db.session() as session:
            if not transition(
                session,
                file_id,
                FileStatus.PENDING,
                File.status == FileStatus.FAILED,
                error=None,
                failure=None,
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
                self.drop_source(self.direct_source(file_id))
            except StorageRefused as exc:  # retrying forever would not change it
                log.error("object %s of a deleted file cannot be removed: %s", file.name, exc)
            remove_staged(staged_path(self.settings.staging_dir, file.name))
        self._drop(file_id, OutboxKind.DELETE)
