"""Metadata: parse a stored file (image size, PDF pages) and add what it found."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from common.files import outbox, states
from common.files.pipeline.base import Stage
from common.models import File, FileStatus, OutboxKind
from common.storage import StorageRefused

log = logging.getLogger(__name__)


class Metadata(Stage):
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
            except (FileNotFoundError, StorageRefused) as exc:
                log.warning("no metadata for file %s: %s", file_id, exc or "no object")
                self._drop(file_id, OutboxKind.METADATA)
                return
            found = extract_metadata(
                local, file.extension, max_image_pixels=self.settings.max_image_pixels
            )
        with self.db.session() as session:
            stored = File.status == FileStatus.STORED
            states.change(session, file_id, "metadata", stored, extra=(file.extra or {}) | found)
            outbox.done(session, file_id, OutboxKind.METADATA)
