"""OpenAPI documents, generated from the schemas in ``api.schemas`` and ``api.v2.schemas``,
and ``/docs`` (Swagger UI, with a version picker).

- ``/openapi.json``: v1 at its unversioned paths (as docs/API.md's v1);
- ``/api/v1/openapi.json``: v1 under ``/api/v1``;
- ``/api/v2/openapi.json``: v2.

Each names its security scheme (a bearer token: a JWT access token or an API key); v1 requires
it only when ``V1_ACCESS=token``. Swagger UI's assets come from the flask-swagger-ui package, so
the page works offline.
"""

from __future__ import annotations

import copy
from typing import Any

from flask import Blueprint, Flask, jsonify
from flask_swagger_ui import get_swaggerui_blueprint

from api import services
from api.schemas import spec, spec_v2

bp = Blueprint("docs", __name__)

V1_PREFIX = "/api/v1"
SECURITY_SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "A JWT access token (POST /api/v2/auth/token) or an API key (upk_...)",
    }
}


def _document(source: dict[str, Any], *, paths, required: bool, version: str) -> dict[str, Any]:
    document = copy.deepcopy(source)
    document["paths"] = {path: item for path, item in source["paths"].items() if paths(path)}
    document["info"]["version"] = version
    document.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
    document["security"] = [{"bearer": []}] if required else []
    return document


def v1_document(*, versioned: bool) -> dict[str, Any]:
    token = services.settings().v1_access == "token"
    return _document(
        spec.spec,
        paths=lambda path: path.startswith(V1_PREFIX) == versioned,
        required=token,
        version="1.0.0",
    )


@bp.get("/openapi.json")
def openapi():
    return jsonify(v1_document(versioned=False))


@bp.get("/api/v1/openapi.json")
def openapi_v1():
    return jsonify(v1_document(versioned=True))


@bp.get("/api/v2/openapi.json")
def openapi_v2():
    document = _document(spec_v2.spec, paths=lambda path: True, required=True, version="2.0.0")
    # Logging in needs no token; registering neither, unless REGISTRATION=closed (admins only).
    document["paths"]["/api/v2/auth/token"]["post"]["security"] = []
    document["paths"]["/api/v2"]["get"]["security"] = []  # discovery: where the live events are
    # A part's URL is its credential (signed, expiring), as a presigned S3 URL is.
    document["paths"]["/api/v2/uploads/{upload_id}/parts/{number}"]["put"]["security"] = []
    if services.settings().registration == "open":
        document["paths"]["/api/v2/users"]["post"]["security"] = []
    return jsonify(document)


def init_docs(app: Flask) -> None:
    spec.register(app)
    spec_v2.register(app)
    app.register_blueprint(bp)
    app.register_blueprint(
        get_swaggerui_blueprint(
            "/docs",
            "/openapi.json",
            config={
                "app_name": "Upload pipeline API",
                "urls": [
                    {"url": "/api/v2/openapi.json", "name": "v2"},
                    {"url": "/api/v1/openapi.json", "name": "v1"},
                ],
            },
            blueprint_name="swagger_ui",
        )
    )
