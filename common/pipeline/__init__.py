"""The life of a file (docs/ARCHITECTURE.md), one stage a module:

- ``intake``: accept an upload, delete a file, requeue a failed one (the API, operators);
- ``ingest``: claim a file, verify and push it, settle the result (the uploads workers);
- ``metadata``: parse a stored file (the metadata workers).

Every status change is a conditional UPDATE through ``common.states.transition``, so a
redelivered task, two workers racing on one file, or a delete racing a push all end in one
final state; the loser only finishes the bookkeeping.
"""

from __future__ import annotations

import atexit
from dataclasses import dataclass, field

from common import outbox
from common.db import Database
from common.pipeline.base import OUTAGE
from common.pipeline.ingest import Ingest, give_up, reclaim_lapsed
from common.pipeline.intake import Intake
from common.pipeline.metadata import Metadata
from common.queue import Publisher
from common.settings import Settings
from common.storage import Storage

__all__ = ["OUTAGE", "Pipeline", "give_up", "reclaim_lapsed"]


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
