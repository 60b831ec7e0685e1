"""Headers every reply carries, and those some replies need (docs/API.md, "Headers").

- ``X-Content-Type-Options: nosniff`` on every reply: a browser never runs a reply as another
  type than it says (a JSON error that echoes input, a file served by ``/storage``).
- ``Cache-Control: no-store`` on what must not sit in a cache: the caller's account, key
  listings, download replies (their URLs are credentials for a while).
- The docs UI may not be framed, and runs only its own scripts (its page has one inline
  script, its configuration).
- ``Retry-After`` only on a refusal (429, 503): set where the refusal is made.
"""

from __future__ import annotations

from flask import Flask, Response, request

NO_STORE = frozenset(
    {
        "v2_users.me",
        "v2_keys.list_keys",
        "v2_keys.create_key",
        "files.download",
        "api_v1_files.download",
        "v2_files.download",
    }
)
DOCS_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


def init_headers(app: Flask) -> None:
    app.after_request(_secure)


def _secure(response: Response) -> Response:
    headers = response.headers
    headers["X-Content-Type-Options"] = "nosniff"
    if request.endpoint in NO_STORE:
        headers["Cache-Control"] = "no-store"
    if request.blueprint == "swagger_ui":
        headers["X-Frame-Options"] = "DENY"
        headers["Content-Security-Policy"] = DOCS_POLICY
    return response
