"""What every stage of the pipeline shares: the services it works with, publishing, and
dropping finished outbox entries."""

from __future__ import annotations

from typing import TYPE_CHECKING

from common import outbox
from common.models import OutboxKind
from common.tasks import TASK_FOR_KIND

if TYPE_CHECKING:
    from common.db import Database
    from common.queue import Publisher
    from common.settings import Settings
    from common.storage import Storage

#: The reason of a file that failed because the store stayed unavailable through every retry;
#: the reconciler puts such files back in the pipeline once the store answers again.
OUTAGE = "Хранилище недоступно: "


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

    def _drop(self, file_id: int, kind: OutboxKind) -> None:
        with self.db.session() as session:
            outbox.done(session, file_id, kind)
