from common.extract import extract_metadata
from tests import samples


def extract(tmp_path, ext, data):
    path = tmp_path / f"f.{ext}"
    path.write_bytes(data)
    return extract_metadata(path, ext, max_image_pixels=50_000_000)


def test_image_dimensions_and_format(tmp_path):
    assert extract(tmp_path, "png", samples.png((17, 9))) == {
        "width": 17,
        "height": 9,
        "format": "PNG",
        "mode": "RGB",
    }
    assert extract(tmp_path, "jpg", samples.jpeg((8, 5)))["format"] == "JPEG"


def test_pdf_page_count(tmp_path):
    assert extract(tmp_path, "pdf", samples.pdf(3)) == {"encrypted": False, "pages": 3}


def test_text_line_count(tmp_path):
    assert extract(tmp_path, "txt", b"a\nb\nc\n") == {"lines": 3}


def test_broken_or_huge_files_give_no_metadata(tmp_path):
    assert extract(tmp_path, "png", samples.png_bomb()) == {}
    assert extract(tmp_path, "pdf", b"%PDF-1.4 garbage") == {}
    assert extract(tmp_path, "docx", samples.docx()) == {}
