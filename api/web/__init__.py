"""The page at ``/app`` (docs/API.md, "The page"): plain HTML, CSS and one JavaScript module kept
in this package, no build step and nothing from another origin. It speaks only the public v2
API, with the access token in memory and the refresh token in the ``HttpOnly`` cookie of
``POST /api/v2/auth/token?session=cookie``.

Its assets are named by a hash of their content (``/app/static/app.<hash>.js``) and cached for a
year; the page itself is revalidated by its ETag. Its ``Content-Security-Policy`` allows
scripts and styles of this origin only (no inline code), connections to this origin, the
realtime process's, and the object store's (a direct upload's parts go there), and no framing.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

from flask import Blueprint, Response, abort, request

from api.services import settings

bp = Blueprint("web", __name__)

STATIC = Path(__file__).with_name("static")
ASSETS = {"app.js": "text/javascript", "app.css": "text/css"}
YEAR = 365 * 24 * 3600


@cache
def _assets() -> dict[str, tuple[str, bytes]]:
    """Each asset's hashed name -> (its type, its bytes); read once a process."""
    found = {}
    for name, kind in ASSETS.items():
        body = (STATIC / name).read_bytes()
        stem, _, ext = name.partition(".")
        found[f"{stem}.{hashlib.sha256(body).hexdigest()[:12]}.{ext}"] = (kind, body)
    return found


@cache
def _page() -> bytes:
    html = (STATIC / "index.html").read_text()
    for hashed in _assets():
        stem, _, rest = hashed.partition(".")
        html = html.replace(f"{stem}.{rest.rpartition('.')[2]}", hashed)
    return html.encode()


def _origin(url: str | None) -> str | None:
    if not url:
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else None


def policy() -> str:
    """The page's CSP: this origin, plus where its live events and its parts go."""
    config = settings()
    connect = ["'self'"]
    realtime = _origin(config.realtime_url)
    if realtime:
        connect += [realtime, "ws" + realtime.removeprefix("http")]
    if config.storage_backend == "s3":
        store = _origin(config.public_s3_endpoint)
        connect += [store] if store else ["https://*.amazonaws.com"]
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src {' '.join(dict.fromkeys(connect))}; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    )


@bp.get("/app")
@bp.get("/app/")
def page():
    body = _page()
    reply = Response(body, mimetype="text/html")
    reply.set_etag(hashlib.sha256(body).hexdigest()[:16])
    reply.headers["Cache-Control"] = "no-cache"
    reply.headers["Content-Security-Policy"] = policy()
    reply.headers["X-Frame-Options"] = "DENY"
    reply.headers["Referrer-Policy"] = "no-referrer"
    return reply.make_conditional(request)


@bp.get("/app/static/<name>")
def asset(name: str):
    found = _assets().get(name)
    if found is None:
        abort(404)
    kind, body = found
    reply = Response(body, mimetype=kind)
    reply.headers["Cache-Control"] = f"public, max-age={YEAR}, immutable"
    return reply
