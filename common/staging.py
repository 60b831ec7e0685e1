"""Staged uploads: the bytes the API accepted, waiting in STAGING_DIR for a worker.

The API writes them (api/multipart.py streams the request body there); the uploads workers
read, verify and push them, then remove them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path


@dataclass(frozen=True)
class StagedUpload:
    #: None: the bytes wait in the store, not here (a direct upload to S3's).
    path: Path | None
    name: str
    original_name: str
    extension: str
    size: int
    sha256: str
    uploaded_at: datetime
    #: The form's small text parts the route asked for (name -> values, in order).
    form: dict[str, list[str]] = field(default_factory=dict)


def staged_path(staging_dir: str | Path, name: str) -> Path:
    """Where the bytes of the file called ``name`` wait for a worker."""
    return Path(staging_dir) / name


#: Where a direct upload's parts and then its joined object wait in an S3 store, until a worker
#: verifies the object and copies it to its name (common/files/direct.py).
DIRECT_PREFIX = "uploads/"


def direct_key(upload_id: str) -> str:
    """The store key of direct upload ``upload_id``'s object before it is verified."""
    return f"{DIRECT_PREFIX}{upload_id}"


def remove_staged(path: Path | None) -> None:
    """Remove a staged file; a missing one is already gone."""
    if path is not None:
        path.unlink(missing_ok=True)
