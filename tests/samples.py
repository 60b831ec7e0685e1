"""Small real files of every allowed type, and hostile look-alikes, made on the fly."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

from PIL import Image
from pypdf import PdfWriter

OLE2_HEADER = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def image(fmt: str, size: tuple[int, int] = (4, 3)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, format=fmt)
    return buffer.getvalue()


def png(size=(4, 3)) -> bytes:
    return image("PNG", size)


def jpeg(size=(4, 3)) -> bytes:
    return image("JPEG", size)


def gif(size=(4, 3)) -> bytes:
    return image("GIF", size)


def pdf(pages: int = 2) -> bytes:
    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=200, height=200)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def docx() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", "<w:document/>")
    return buffer.getvalue()


def plain_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("readme.txt", "not a word document")
    return buffer.getvalue()


def doc() -> bytes:
    """An OLE2 compound file header followed by empty sectors, as libmagic recognises it."""
    return OLE2_HEADER + b"\x00" * 1024


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG that declares a gigantic image (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


HTML = b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>"
EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 200 + b"PE\x00\x00"

VALID = {
    "txt": lambda: "Привет, мир\n".encode(),
    "pdf": pdf,
    "png": png,
    "jpg": jpeg,
    "jpeg": jpeg,
    "gif": gif,
    "doc": doc,
    "docx": docx,
}
