"""JSON request bodies: refused (415/400/413) in the service's error shape before any schema
sees them."""

from __future__ import annotations

import functools
import json

from flask import request
from werkzeug.exceptions import BadRequest

from api import errors

MAX_BODY = 64 * 1024


def json_object_body(view):
    """Refuse bodies that are not a JSON object (415/400/413) before schema validation."""

    @functools.wraps(view)
    def checked(*args, **kwargs):
        json_object()
        return view(*args, **kwargs)

    return checked


def json_object() -> dict:
    """The body as a JSON object, parsed once: Flask caches it for the schema validation."""
    if not request.is_json:
        raise errors.JSON_EXPECTED()
    request.max_content_length = MAX_BODY
    try:
        data = request.get_json()
    except BadRequest as exc:  # not JSON, or not UTF-8
        problem = _json_problem(exc.__cause__ or exc.__context__)
        raise errors.INVALID_JSON(problem) from None
    except RecursionError:
        raise errors.INVALID_JSON("too deeply nested") from None
    if not isinstance(data, dict):
        raise errors.NOT_AN_OBJECT("body must be an object")
    if not is_text(json.dumps(data, ensure_ascii=False)):
        raise errors.INVALID_JSON(
            "a string holds a lone surrogate (\\ud800-\\udfff): not Unicode text",
        )
    return data


def is_text(value: str) -> bool:
    """Whether ``value`` is Unicode text: JSON's ``\\ud800`` escapes decode to lone surrogates,
    which no database column, log line or reply encoder takes."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_problem(cause: BaseException | None) -> str:
    """What was wrong with a body, in the API's words (never the decoder's own text)."""
    if isinstance(cause, UnicodeDecodeError):
        return "the body is not UTF-8"
    if isinstance(cause, json.JSONDecodeError):
        return f"not valid JSON at line {cause.lineno}, column {cause.colno}"
    return "not valid JSON"
