"""Every fact about each accepted extension, in one table.

Settings (what may be allowed), naming (the stored Content-Type), sniffing (which types the
bytes may show, and which extra rule applies) and extraction (which metadata to read) all look
here; adding an extension is one row.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FileKind:
    extension: str
    #: The Content-Type a verified file is stored and served with.
    canonical_type: str
    #: What libmagic may name the bytes as (text has a rule of its own instead).
    sniffed_types: frozenset[str]
    #: The check on top of libmagic: ``text`` (no NUL bytes), ``image`` (opens in Pillow
    #: within the pixel cap), ``docx`` (a zip with word/document.xml), ``ole2`` (the OLE2
    #: header), or None.
    content_rule: str | None = None
    #: Pillow's name of the format, for images.
    pillow_format: str | None = None
    #: Which metadata is read once the file is stored: ``image``, ``pdf``, ``text`` or None.
    extractor: str | None = None


_JPEG = frozenset({"image/jpeg"})
_WORD = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"

KINDS: dict[str, FileKind] = {
    kind.extension: kind
    for kind in (
        FileKind("txt", "text/plain", frozenset(), "text", extractor="text"),
        FileKind("pdf", "application/pdf", frozenset({"application/pdf"}), extractor="pdf"),
        FileKind("png", "image/png", frozenset({"image/png"}), "image", "PNG", "image"),
        FileKind("jpg", "image/jpeg", _JPEG, "image", "JPEG", "image"),
        FileKind("jpeg", "image/jpeg", _JPEG, "image", "JPEG", "image"),
        FileKind("gif", "image/gif", frozenset({"image/gif"}), "image", "GIF", "image"),
        FileKind(
            "doc",
            "application/msword",
            frozenset({"application/msword", "application/x-ole-storage", "application/CDFV2"}),
            "ole2",
        ),
        FileKind("docx", _WORD, frozenset({"application/zip", _WORD}), "docx"),
    )
}

#: Every extension the service knows how to check, in the order the API lists them.
EXTENSIONS: tuple[str, ...] = tuple(KINDS)
