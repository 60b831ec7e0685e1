"""Hand-built multipart bodies, for the edge cases HTTP clients refuse to produce."""

from __future__ import annotations

BOUNDARY = "----pipeline-test-boundary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def part(
    name: str, data: bytes, filename: str | None = None, raw_disposition: bytes | None = None
) -> bytes:
    if raw_disposition is None:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        raw_disposition = disposition.encode()
    head = b"Content-Disposition: " + raw_disposition + b"\r\n"
    if filename is not None:
        head += b"Content-Type: application/octet-stream\r\n"
    return f"--{BOUNDARY}\r\n".encode() + head + b"\r\n" + data + b"\r\n"


def body(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def file_body(filename: str, data: bytes, field: str = "file") -> bytes:
    return body(part(field, data, filename))
