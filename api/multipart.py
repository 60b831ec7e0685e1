"""Stream one multipart upload to STAGING_DIR: size capped, sha256 computed, in a single pass.

(An HTTP concern, so it lives on the API's side; what it produces, ``StagedUpload``, is in
common/staging.py for the workers too.)

The body is read in chunks straight from the WSGI input and never held whole in memory. The
extension is checked from the part's headers before any of its bytes are read, and reading stops
as soon as the file passes the size limit. On any error the partial file is removed.
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import (
    NEED_DATA,
    Data,
    Epilogue,
    Field,
    File,
    MultipartDecoder,
)

from common.naming import clean_original_name, extension_of, generate_name
from common.staging import StagedUpload, staged_path
from common.storage.filesystem import fsync_directory

CHUNK = 128 * 1024
#: Room for the multipart framing and small form fields around the file itself.
FRAMING_ALLOWANCE = 64 * 1024
FILE_FIELD = "file"


class UploadError(Exception):
    """An upload the service refuses; ``code`` is the stable machine code of the error body."""

    code = "BAD_UPLOAD"


class NotMultipart(UploadError):
    code = "NOT_MULTIPART"


class MalformedUpload(UploadError):
    code = "MALFORMED_MULTIPART"


class MissingFile(UploadError):
    code = "NO_FILE"


class EmptyFilename(UploadError):
    code = "EMPTY_FILENAME"


class DuplicateFile(UploadError):
    code = "MULTIPLE_FILES"


class FileTooLarge(UploadError):
    code = "FILE_TOO_LARGE"


class ExtensionNotAllowed(UploadError):
    code = "EXTENSION_NOT_ALLOWED"


class _Sink:
    """The staged file being written, with its running size and digest."""

    def __init__(self, path: Path, limit: int) -> None:
        self.path = path
        self.limit = limit
        self.size = 0
        self.sha256 = hashlib.sha256()
        self.fh = open(path, "xb")  # noqa: SIM115 - closed in finish()/discard()

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise FileTooLarge(f"file larger than {self.limit} bytes")
        self.sha256.update(data)
        self.fh.write(data)

    def finish(self) -> None:
        # Accepted means durable: the 201 must survive a crash, the file and its name alike.
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        fsync_directory(self.path.parent)

    def discard(self) -> None:
        self.fh.close()
        self.path.unlink(missing_ok=True)


def stage_upload(
    stream: BinaryIO,
    content_type: str | None,
    content_length: int | None,
    *,
    staging_dir: str | Path,
    max_bytes: int,
    allowed_extensions: tuple[str, ...],
    now: datetime,
    fields: tuple[str, ...] = (),
) -> StagedUpload:
    """Read a multipart body from ``stream`` and stage its ``file`` part; raise ``UploadError``.
    The text parts named in ``fields`` are kept (``StagedUpload.form``), others dropped."""
    mimetype, options = parse_options_header(content_type or "")
    if mimetype != "multipart/form-data":
        raise NotMultipart("expected multipart/form-data")
    boundary = options.get("boundary", "")
    if not boundary:
        raise MalformedUpload("multipart boundary is missing")
    body_limit = max_bytes + FRAMING_ALLOWANCE
    if content_length is not None and content_length > body_limit:
        raise FileTooLarge("declared body length over the limit")

    Path(staging_dir).mkdir(parents=True, exist_ok=True)
    parser = _UploadParser(staging_dir, max_bytes, allowed_extensions, now, fields)
    # The cap bounds what the decoder buffers (part headers): one chunk plus the framing.
    decoder = MultipartDecoder(
        boundary.encode("latin-1"), max_form_memory_size=CHUNK + FRAMING_ALLOWANCE
    )
    marker = b"--" + boundary.encode("latin-1")
    read = 0
    try:
        while not parser.done:
            chunk = _read_client(stream)
            read += len(chunk)
            if read > body_limit:
                raise FileTooLarge("body over the limit")
            for piece in _pieces(chunk, marker) if chunk else (None,):
                decoder.receive_data(piece)
                _drain(decoder, parser)
            if not chunk and not parser.done:
                raise MalformedUpload("body ended before the closing boundary")
        return parser.result()
    except UploadError:
        parser.discard()
        raise
    except RequestEntityTooLarge as exc:  # a non-file field over its memory cap
        parser.discard()
        raise FileTooLarge("form field over the limit") from exc
    except OSError:  # the staging disk, not the client: full, read-only, gone
        parser.discard()
        raise
    except Exception as exc:  # werkzeug reports malformed framing as ValueError & co.
        parser.discard()
        raise MalformedUpload("the multipart framing is malformed") from exc


def _read_client(stream: BinaryIO) -> bytes:
    """The next chunk of the body. A body cut off by the client (a chunked one ending mid-chunk,
    a connection closed early) is the client's error, not the disk's: the server's readers say
    so with OSError subclasses, which must not be taken for a staging-disk fault."""
    try:
        return stream.read(CHUNK)
    except Exception as exc:
        raise MalformedUpload("the request body ended before it was complete") from exc


def _pieces(chunk: bytes, marker: bytes) -> tuple[memoryview, ...]:
    """``chunk`` split just before its last boundary line, if it has one after its start.

    Once a boundary is in its buffer, werkzeug's decoder finds it with a regular expression
    over the whole buffer: ~1 ms for 128 KiB of file data. Fed the bytes before the boundary
    first, the decoder passes them on as data and keeps only a few, so the search is short.
    Where the chunk is cut does not change what is decoded.
    """
    view = memoryview(chunk)
    at = chunk.rfind(marker) - 2  # the line break before it (CRLF; at worst a byte more)
    return (view[:at], view[at:]) if at > 0 else (view,)


def _drain(decoder: MultipartDecoder, parser: _UploadParser) -> None:
    while not parser.done and (event := decoder.next_event()) is not NEED_DATA:
        parser.handle(event)


#: The most text all kept fields together may hold.
MAX_FIELDS_BYTES = 8 * 1024


class _UploadParser:
    """Turns decoder events into one staged file and the wanted text fields; other parts are
    read and dropped."""

    def __init__(self, staging_dir, max_bytes, allowed_extensions, now, fields=()) -> None:
        self.staging_dir = Path(staging_dir)
        self.max_bytes = max_bytes
        self.allowed = allowed_extensions
        self.now = now
        self.sink: _Sink | None = None
        self.writing = False
        self.done = False
        self.name = self.original_name = self.extension = ""
        self.seen_file = False
        self.wanted = set(fields)
        self.form: dict[str, list[str]] = {}
        self.field: bytearray | None = None  # the wanted text part being read
        self.field_name = ""
        self.field_bytes = 0

    def handle(self, event) -> None:
        if isinstance(event, File) and event.name == FILE_FIELD:
            self._start_file(event.filename)
        elif isinstance(event, Field) and event.name in self.wanted:
            self.writing, self.field, self.field_name = False, bytearray(), event.name
        elif isinstance(event, (File, Field)):
            self.writing, self.field = False, None
        elif isinstance(event, Data):
            if self.writing:
                self.sink.write(event.data)
                if not event.more_data:
                    self.writing = False
            elif self.field is not None:
                self._field_data(event)
        elif isinstance(event, Epilogue):
            self.done = True

    def _field_data(self, event: Data) -> None:
        self.field_bytes += len(event.data)
        if self.field_bytes > MAX_FIELDS_BYTES:
            raise MalformedUpload(f"form fields over {MAX_FIELDS_BYTES} bytes")
        self.field += event.data
        if not event.more_data:
            try:
                value = self.field.decode("utf-8")
            except UnicodeDecodeError:
                raise MalformedUpload(f"the {self.field_name!r} part is not UTF-8") from None
            self.form.setdefault(self.field_name, []).append(value)
            self.field = None

    def _start_file(self, raw_filename: str | None) -> None:
        if self.seen_file:
            raise DuplicateFile("more than one 'file' part")
        self.seen_file = True
        if not raw_filename:
            raise EmptyFilename("the 'file' part has an empty filename")
        self.original_name = clean_original_name(raw_filename)
        self.extension = extension_of(self.original_name)
        if self.extension not in self.allowed:
            raise ExtensionNotAllowed(f"extension {self.extension!r} is not allowed")
        self.name = generate_name(self.extension, self.now)
        self.sink = _Sink(staged_path(self.staging_dir, self.name), self.max_bytes)
        self.writing = True

    def result(self) -> StagedUpload:
        if not self.seen_file:
            raise MissingFile("no 'file' part in the form")
        self.sink.finish()
        return StagedUpload(
            path=self.sink.path,
            name=self.name,
            original_name=self.original_name or f"file.{self.extension}",
            extension=self.extension,
            size=self.sink.size,
            sha256=self.sink.sha256.hexdigest(),
            uploaded_at=self.now,
            form=self.form,
        )

    def discard(self) -> None:
        if self.sink is not None:
            self.sink.discard()
