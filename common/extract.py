"""Metadata worth computing once a file is stored: image size and format, PDF page count."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

from PIL import Image
from pypdf import PdfReader

from common.registry import KINDS

log = logging.getLogger(__name__)


def extract_metadata(path: Path, extension: str, *, max_image_pixels: int) -> dict[str, Any]:
    """Fields to merge into a file's metadata; empty when the format has none or will not parse."""
    extractor = KINDS[extension].extractor
    try:
        if extractor == "image":
            return _image_metadata(path, max_image_pixels)
        if extractor == "pdf":
            return _pdf_metadata(path)
        if extractor == "text":
            return _text_metadata(path)
    except Exception as exc:  # a file that will not parse simply has no extra metadata
        log.info("no metadata for %s: %s", path.name, exc)
    return {}


def _image_metadata(path: Path, max_pixels: int) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            width, height = image.size
            if width * height > max_pixels:
                return {}
            info: dict[str, Any] = {
                "width": width,
                "height": height,
                "format": image.format,
                "mode": image.mode,
            }
            if getattr(image, "is_animated", False):
                info["animated"] = True
            return info


def _pdf_metadata(path: Path) -> dict[str, Any]:
    reader = PdfReader(path, strict=False)
    info: dict[str, Any] = {"encrypted": reader.is_encrypted}
    if not reader.is_encrypted:
        info["pages"] = len(reader.pages)
    return info


def _text_metadata(path: Path) -> dict[str, Any]:
    lines = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1024 * 1024):
            lines += chunk.count(b"\n")
    return {"lines": lines}
