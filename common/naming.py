"""Generated storage names, and the cleaning of the names clients send."""

from __future__ import annotations

import re
import secrets
import unicodedata
from datetime import datetime

#: A name this service generated: ``YYYYMMDD_HHMMSS_<16 hex>.<ext>`` (docs/API.md).
GENERATED_NAME = re.compile(r"^\d{8}_\d{6}_[0-9a-f]{16}\.[a-z0-9]{1,10}$")

MAX_ORIGINAL_NAME = 255


def generate_name(extension: str, now: datetime) -> str:
    """A fresh, unique storage name; only the lower-cased extension comes from the client."""
    return f"{now:%Y%m%d_%H%M%S}_{secrets.token_hex(8)}.{extension}"


def is_generated_name(name: str) -> bool:
    return bool(GENERATED_NAME.match(name))


def clean_original_name(raw: str) -> str:
    """The client's name made safe to show: last path part, no control characters, Unicode kept.

    Never used as a path: it is only recorded, echoed back, and put into Content-Disposition.
    """
    text = unicodedata.normalize("NFC", raw)
    text = re.split(r"[/\\]", text)[-1]
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C")
    text = text.strip()
    if set(text) <= {"."}:  # "", "." and ".." name nothing
        return ""
    if len(text) > MAX_ORIGINAL_NAME:
        stem, dot, ext = text.rpartition(".")
        if dot and 0 < len(ext) <= 16:
            text = stem[: MAX_ORIGINAL_NAME - len(ext) - 1] + "." + ext
        else:
            text = text[:MAX_ORIGINAL_NAME]
    return text


def extension_of(name: str) -> str:
    """The lower-cased extension of a cleaned name, or '' when it has none."""
    _, dot, ext = name.rpartition(".")
    return ext.lower() if dot else ""
