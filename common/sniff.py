"""Is a staged file what its extension says? The real type comes from its bytes (libmagic).

libmagic (python-magic) names the type from magic numbers; on top of it each extension has a
rule: images must also open in Pillow within the pixel cap (no decompression bombs, no truncated
headers), ``.docx`` must be a zip holding ``word/document.xml``, ``.txt`` must hold no NUL byte.
"""

from __future__ import annotations

import codecs
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import magic
from PIL import Image

from common.registry import KINDS

OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


@dataclass(frozen=True)
class Verdict:
    """``reason`` is None when the content matches; otherwise it says why not (for the user)."""

    detected: str
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


def preload() -> None:
    """Load libmagic's database and Pillow's format plugins now rather than on first use."""
    magic.from_buffer(b"%PDF-1.4\n", mime=True)
    Image.init()


def detect_type(path: Path) -> str:
    """The MIME type libmagic reads from the file's bytes."""
    return magic.from_file(str(path), mime=True)


def check_content(path: Path, extension: str, *, max_image_pixels: int) -> Verdict:
    """Check the staged file at ``path`` against ``extension``."""
    kind = KINDS[extension]
    detected = detect_type(path)
    if kind.content_rule == "text":
        return Verdict(detected, _text_problem(path, detected))
    if path.stat().st_size == 0:
        return Verdict(detected, f"Пустой файл не может быть .{extension}")
    if detected not in kind.sniffed_types:
        return Verdict(detected, _mismatch(extension, detected))
    if kind.content_rule == "docx":
        return Verdict(detected, _docx_problem(path))
    if kind.content_rule == "ole2" and _head(path, 8) != OLE2_MAGIC:
        return Verdict(detected, _mismatch(extension, detected))
    if kind.content_rule == "image":
        return Verdict(detected, _image_problem(path, kind.pillow_format, max_image_pixels))
    return Verdict(detected)


def _mismatch(extension: str, detected: str) -> str:
    return f"Содержимое файла не соответствует расширению .{extension}: обнаружен тип {detected}"


def _head(path: Path, size: int) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(size)


def _text_problem(path: Path, detected: str) -> str | None:
    decoder = codecs.getincrementaldecoder("utf-8")()
    utf8 = True
    with open(path, "rb") as fh:
        while chunk := fh.read(1024 * 1024):
            if b"\x00" in chunk:
                return "Текстовый файл содержит NUL-байты"
            utf8 = utf8 and _decodes(decoder, chunk)
    if utf8 and _decodes(decoder, b"", final=True):
        return None
    if detected.startswith("text/") or detected == "application/json":
        return None  # text in another encoding
    return _mismatch("txt", detected)


def _decodes(decoder: codecs.IncrementalDecoder, chunk: bytes, final: bool = False) -> bool:
    try:
        decoder.decode(chunk, final)
    except UnicodeDecodeError:
        return False
    return True


def _docx_problem(path: Path) -> str | None:
    try:
        with zipfile.ZipFile(path) as archive:
            if "word/document.xml" in archive.namelist():
                return None
    except (zipfile.BadZipFile, OSError, ValueError):
        return "Повреждённый архив .docx"
    return "Архив не является документом Word: нет word/document.xml"


def _image_problem(path: Path, expected_format: str, max_pixels: int) -> str | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.format != expected_format:
                    return _mismatch(expected_format.lower(), f"image/{image.format.lower()}")
                width, height = image.size
                if width * height > max_pixels:
                    return f"Изображение слишком велико: {width}x{height} пикселей"
                image.verify()
    except Image.DecompressionBombError:
        return "Изображение слишком велико (декомпрессионная бомба)"
    except Exception as exc:  # Pillow raises many types for broken files
        return f"Повреждённое изображение: {exc.__class__.__name__}"
    return None
