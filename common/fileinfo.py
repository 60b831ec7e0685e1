"""How a file is described in the API's replies and in its object's user metadata."""

from __future__ import annotations

from datetime import datetime

from common.models import File


def iso_z(moment: datetime, *, millis: bool = False) -> str:
    """ISO 8601 in UTC with a ``Z``, as the API writes times."""
    text = moment.replace(tzinfo=None).isoformat(timespec="milliseconds" if millis else "seconds")
    return text + "Z"


def file_metadata(file: File) -> dict[str, str]:
    """The metadata the API shows on every file, as strings (it is also the S3 user metadata)."""
    return {
        "original_name": file.original_name,
        "upload_time": iso_z(file.uploaded_at, millis=True),
        "file_size": str(file.size),
        "content_type": file.content_type,
    }
