"""What every stage of the pipeline shares: the services it works with, publishing, dropping
finished outbox entries, and a direct upload's object waiting in the store."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from common.files import outbox
from common.models import DirectUpload, File, OutboxKind
from common.staging import direct_key
from common.storage import StorageError
from common.tasks import TASK_FOR_KIND

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from common.db import Database
    from common.queue import Publisher
    from common.settings import Settings
    from common.storage import Storage


class Stage:
    """The services of a pipeline, as each stage sees them."""

    settings: Settings
    db: Database
    storage: Storage
    publisher: Publisher
    marks: outbox.PublishMarks

    def publish(self, file_id: int, kind: OutboxKind) -> bool:
        """Send the task for an outbox entry; mark it published if the broker took it."""
        if not self.publisher.send(TASK_FOR_KIND[kind], file_id):
            return False
        self.marks.add(file_id, kind)
        return True

    def direct_source(self, file_id: int) -> str | None:
        """Where a direct upload's joined object waits in the store (``uploads/<id>``) until a
        worker has verified and copied it, if the file came so (S3 only: on the filesystem
        store its parts were joined into the staged file)."""
        if not self.storage.multipart:
            return None
        with self.db.reading() as session:
            query = select(DirectUpload.id).where(_came_by_direct_upload(file_id))
            upload_id = session.scalar(query)
        return direct_key(upload_id) if upload_id else None

    def load_with_source(self, session: Session, file_id: int) -> tuple[File, str | None]:
        """The file as it is now (reloaded into ``session``) and ``direct_source``'s answer,
        in one SELECT (an outer join: a file has at most one direct upload)."""
        if not self.storage.multipart:
            return session.get(File, file_id, populate_existing=True), None
        query = (
            select(File, DirectUpload.id)
            .outerjoin(DirectUpload, _came_by_direct_upload(file_id))
            .where(File.id == file_id)
            .execution_options(populate_existing=True)
        )
        file, upload_id = session.execute(query).one()
        return file, direct_key(upload_id) if upload_id else None

    def drop_source(self, source: str | None) -> None:
        """Remove a direct upload's object once its file is settled (stored under its name,
        refused, or deleted); the bucket's lifecycle rule is the guard behind a failure."""
        if source is None:
            return
        try:
            self.storage.delete(source)
        except StorageError as exc:
            log.warning("direct upload object %s not removed: %s", source, exc)

    def _drop(self, file_id: int, kind: OutboxKind) -> None:
        with self.db.session() as session:
            outbox.done(session, file_id, kind)


def _came_by_direct_upload(file_id: int):
    """The direct upload whose joined object in the store became ``file_id``."""
    return and_(DirectUpload.file_id == file_id, DirectUpload.store_upload_id.is_not(None))
