import pytest

from common.registry import KINDS
from common.sniff import check_content
from tests import samples

PIXELS = 50_000_000


def check(tmp_path, ext, data):
    path = tmp_path / f"f.{ext}"
    path.write_bytes(data)
    return check_content(path, ext, max_image_pixels=PIXELS)


@pytest.mark.parametrize("ext", sorted(samples.VALID))
def test_genuine_files_pass(tmp_path, ext):
    verdict = check(tmp_path, ext, samples.VALID[ext]())
    assert verdict.ok, verdict.reason
    assert ext in KINDS


@pytest.mark.parametrize(
    ("ext", "data", "hint"),
    [
        ("png", samples.HTML, "text/html"),
        ("pdf", samples.EXE, "application/x-dosexec"),
        ("txt", b"hello\x00world", "NUL"),
        ("jpg", samples.png(), "image/png"),
        ("gif", samples.pdf(), "application/pdf"),
        ("docx", samples.plain_zip(), "word/document.xml"),
        ("doc", samples.docx(), "application/zip"),
        ("png", samples.png()[:40], "Повреждённое"),
        ("png", samples.png_bomb(), "слишком велико"),
        ("pdf", b"", "Пустой"),
        ("txt", samples.png(), "NUL"),
    ],
)
def test_spoofed_or_broken_content_is_rejected(tmp_path, ext, data, hint):
    verdict = check(tmp_path, ext, data)
    assert not verdict.ok
    assert hint in verdict.reason


def test_text_in_another_encoding_is_still_text(tmp_path):
    verdict = check(tmp_path, "txt", "Привет, мир".encode("cp1251") * 50)
    assert verdict.ok, verdict.reason


def test_utf8_split_across_read_chunks_is_text(tmp_path):
    data = b"a" * (1024 * 1024 - 1) + "ж".encode() * 10
    assert check(tmp_path, "txt", data).ok
