"""JSON replies written by orjson.

Flask's own provider (``json.dumps``) took ~1 ms for a page of 100 files, a tenth of the
listing; orjson writes the same document several times faster. Output keeps Flask's shape:
UTF-8 without escaping (Cyrillic as is), keys in the order given, compact, one trailing
newline; in debug mode replies stay indented through Flask's own path. Datetimes and
dataclasses go to Flask's converter as before. Request bodies are still read by Flask's
provider (small, and its error handling is what the API's 400 replies build on).
"""

from __future__ import annotations

from typing import Any

import orjson
from flask import Response
from flask.json.provider import DefaultJSONProvider

_OPTIONS = (
    orjson.OPT_APPEND_NEWLINE | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
)


class OrjsonProvider(DefaultJSONProvider):
    ensure_ascii = False
    sort_keys = False

    def response(self, *args: Any, **kwargs: Any) -> Response:
        if self._app.debug or self.compact is False:
            return super().response(*args, **kwargs)
        obj = self._prepare_response_obj(args, kwargs)
        body = orjson.dumps(obj, default=self.default, option=_OPTIONS)
        return self._app.response_class(body, mimetype=self.mimetype)
