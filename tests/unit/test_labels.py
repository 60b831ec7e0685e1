"""Tags and categories as the service stores them: letters of any script with their marks."""

from __future__ import annotations

import pytest

from common.files.labels import InvalidLabel, normalise


@pytest.mark.parametrize(
    "word", ["हिंदी", "தமிழ்", "বাংলা", "ไทย", "한국어", "отчёт", "e\u0301t\u00e9"]
)
def test_words_of_any_script_are_labels(word):
    assert normalise(word)


@pytest.mark.parametrize("raw", ["", "a b", "a/b", "<b>", "\u0301a", "x" * 51, "a\u200bb"])
def test_anything_else_is_refused(raw):
    with pytest.raises(InvalidLabel):
        normalise(raw)


def test_labels_are_folded_and_composed():
    assert normalise(" ОТЧЁТ ") == "отчёт"
    assert normalise("Ｗｏｒｋ") == "work"
