import hashlib
import io
from datetime import UTC, datetime

import pytest

from api import multipart as staging
from testkit import multipart

LIMIT = 1024 * 1024


def stage(tmp_path, data: bytes, content_type=multipart.CONTENT_TYPE, length="auto", stream=None):
    stream = stream or io.BytesIO(data)
    return staging.stage_upload(
        stream,
        content_type,
        len(data) if length == "auto" else length,
        staging_dir=tmp_path,
        max_bytes=LIMIT,
        allowed_extensions=("txt", "png"),
        now=datetime(2025, 9, 6, 12, 34, 56, tzinfo=UTC),
    )


def test_stages_the_file_part_with_size_and_digest(tmp_path):
    data = b"x" * 300_000 + "конец".encode()
    body = multipart.body(
        multipart.part("note", b"ignored"),
        multipart.part("file", data, "../../отчёт.txt"),
    )
    staged = stage(tmp_path, body)
    assert staged.path.read_bytes() == data
    assert staged.size == len(data)
    assert staged.sha256 == hashlib.sha256(data).hexdigest()
    assert staged.original_name == "отчёт.txt"
    assert staged.name.startswith("20250906_123456_") and staged.name.endswith(".txt")
    assert staged.path.parent == tmp_path


class Trickle(io.BytesIO):
    """A client whose bytes arrive in uneven pieces, cutting the framing anywhere."""

    SIZES = (1, 7, 2, 4096, staging.CHUNK - 1, 3, staging.CHUNK, 65_537)

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.turn = 0

    def read(self, size=-1):
        self.turn += 1
        return super().read(min(size, self.SIZES[self.turn % len(self.SIZES)]))


# Bytes that look like framing: line breaks of every kind and most of the boundary.
LOOKALIKE = b"\r\n--" + multipart.BOUNDARY.encode()[:-1] + b"\n\r\r\n-\r"


@pytest.mark.parametrize("file_last", [True, False], ids=["file-last", "note-last"])
@pytest.mark.parametrize("line_break", [b"\r\n", b"\n"], ids=["crlf", "lf"])
@pytest.mark.parametrize("size", [0, 1, 5_000, 300_000])
def test_the_file_bytes_survive_any_framing_and_any_read_sizes(
    tmp_path, line_break, size, file_last
):
    # It ends in a plain byte: a trailing CR before LF framing would read as a CRLF break.
    data = (LOOKALIKE * (size // len(LOOKALIKE)))[: size - 1] + b"x" if size else b""
    boundary = b"--" + multipart.BOUNDARY.encode()
    file = [boundary, b'Content-Disposition: form-data; name="file"; filename="a.txt"', b"", data]
    note = [boundary, b'Content-Disposition: form-data; name="note"', b"", b"note"]
    parts = note + file if file_last else file + note
    body = line_break.join([*parts, boundary + b"--", b""])
    for stream in (io.BytesIO(body), Trickle(body)):
        staged = stage(tmp_path, body, stream=stream)
        assert staged.path.read_bytes() == data
        assert staged.sha256 == hashlib.sha256(data).hexdigest()


def test_exactly_the_limit_is_accepted(tmp_path):
    staged = stage(tmp_path, multipart.file_body("a.txt", b"a" * LIMIT))
    assert staged.size == LIMIT


def test_one_byte_over_is_refused_and_nothing_is_left(tmp_path):
    with pytest.raises(staging.FileTooLarge):
        stage(tmp_path, multipart.file_body("a.txt", b"a" * (LIMIT + 1)))
    assert list(tmp_path.iterdir()) == []


def test_huge_declared_length_is_refused_without_reading(tmp_path):
    stream = io.BytesIO(b"a" * 1000)
    with pytest.raises(staging.FileTooLarge):
        stage(tmp_path, b"", length=10**9, stream=stream)
    assert stream.tell() == 0
    assert list(tmp_path.iterdir()) == []


def test_unbounded_stream_stops_at_the_limit(tmp_path):
    class Endless(io.RawIOBase):
        read_total = 0

        def read(self, size=-1):
            size = 65536 if size is None or size < 0 else size
            Endless.read_total += size
            if Endless.read_total <= size:
                return multipart.part("file", b"", "a.txt")[:-2] + b"a" * (size - 200)
            return b"a" * size

    with pytest.raises(staging.FileTooLarge):
        staging.stage_upload(
            Endless(),
            multipart.CONTENT_TYPE,
            None,
            staging_dir=tmp_path,
            max_bytes=LIMIT,
            allowed_extensions=("txt",),
            now=datetime.now(UTC),
        )
    assert Endless.read_total <= LIMIT + staging.FRAMING_ALLOWANCE + staging.CHUNK
    assert list(tmp_path.iterdir()) == []


def test_disallowed_extension_is_refused_before_the_bytes(tmp_path):
    body = multipart.file_body("virus.exe", b"MZ" + b"a" * (LIMIT - 10))
    stream = io.BytesIO(body)
    with pytest.raises(staging.ExtensionNotAllowed):
        stage(tmp_path, body, stream=stream)
    assert stream.tell() <= staging.CHUNK
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("body", "content_type", "error"),
    [
        (multipart.file_body("a.txt", b"x", field="document"), None, staging.MissingFile),
        (multipart.file_body("", b"x"), None, staging.EmptyFilename),
        (multipart.body(), None, staging.MissingFile),
        (
            multipart.body(
                multipart.part("file", b"1", "a.txt"), multipart.part("file", b"2", "b.txt")
            ),
            None,
            staging.DuplicateFile,
        ),
        (b"file=abc", "application/x-www-form-urlencoded", staging.NotMultipart),
        (multipart.file_body("a.txt", b"x"), "multipart/form-data", staging.MalformedUpload),
        (multipart.file_body("a.txt", b"x")[:-30], None, staging.MalformedUpload),
        (b"garbage without any boundary", None, staging.MalformedUpload),
    ],
)
def test_bad_forms_are_refused_and_leave_nothing(tmp_path, body, content_type, error):
    with pytest.raises(error):
        stage(tmp_path, body, content_type=content_type or multipart.CONTENT_TYPE)
    assert list(tmp_path.iterdir()) == []


def test_rfc5987_filename_is_decoded(tmp_path):
    disposition = "form-data; name=\"file\"; filename*=UTF-8''%D1%84%D0%B0%D0%B9%D0%BB.txt"
    body = multipart.body(multipart.part("file", b"hi", "x", raw_disposition=disposition.encode()))
    staged = stage(tmp_path, body)
    assert staged.original_name == "файл.txt"
