"""The life of a file (docs/ARCHITECTURE.md), one stage a module:

- ``intake``: accept an upload, delete a file, requeue a failed one (the API, operators);
- ``ingest``: claim a file, verify and push it, settle the result (the uploads workers);
- ``metadata``: parse a stored file (the metadata workers).

Every status change is a conditional UPDATE through ``common.files.states.transition``, so a
redelivered task, two workers racing on one file, or a delete racing a push all end in one
final state; the loser only finishes the bookkeeping.
"""

from __future__ import annotations

import atexit
from dataclasses import dataclass, field

from common.db import Database
from common.files import outbox
from common.files.pipeline.ingest import Ingest, give_up, reclaim_lapsed
from common.files.pipeline.intake import Intake
from common.files.pipeline.metadata import Metadata
from common.queue import Publisher
from common.settings import Settings
from common.storage import Storage

__all__ = ["Pipeline", "give_up", "reclaim_lapsed"]


@dataclass
class Pipeline(Intake, Ingest, Metadata):
    """The services and every stage over them: what the API, workers and CLI work with."""

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
