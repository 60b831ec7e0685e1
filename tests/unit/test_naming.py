from datetime import UTC, datetime

import pytest

from common.naming import clean_original_name, extension_of, generate_name, is_generated_name


def test_generated_names_follow_the_documented_pattern_and_are_unique():
    now = datetime(2025, 9, 6, 12, 34, 56, tzinfo=UTC)
    names = {generate_name("txt", now) for _ in range(1000)}
    assert len(names) == 1000
    for name in names:
        assert name.startswith("20250906_123456_")
        assert name.endswith(".txt")
        assert is_generated_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "../etc/passwd",
        "20250906_123456_abc.txt",
        "x.txt",
        "20250906_123456_0123456789abcdef.txt/..",
        "20250906_123456_0123456789ABCDEF.txt",
        "",
    ],
)
def test_other_names_are_not_generated(name):
    assert not is_generated_name(name)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("../../etc/passwd.txt", "passwd.txt"),
        ("C:\\Users\\me\\report.pdf", "report.pdf"),
        ("a\x00b\x07c.png", "abc.png"),
        ("line\nbreak\r\t.gif", "linebreak.gif"),
        ("Отчёт за 2025 год.docx", "Отчёт за 2025 год.docx"),
        ("  spaced.txt  ", "spaced.txt"),
        ("..", ""),
        ("файл", "файл"),
    ],
)
def test_original_names_are_cleaned(raw, clean):
    assert clean_original_name(raw) == clean


def test_long_names_keep_their_extension():
    cleaned = clean_original_name("я" * 1000 + ".pdf")
    assert len(cleaned) == 255
    assert cleaned.endswith(".pdf")


@pytest.mark.parametrize(
    ("name", "ext"),
    [("a.PNG", "png"), ("a.tar.gz", "gz"), ("archive.php.jpg", "jpg"), ("noext", ""), ("", "")],
)
def test_extension_is_lowercased_last_suffix(name, ext):
    assert extension_of(name) == ext
