"""``/openapi.json`` (generated from the schemas in ``api.schemas``) and ``/docs`` (Swagger UI).

Swagger UI's assets come from the flask-swagger-ui package, so the page works offline.
"""

from __future__ import annotations

from flask import Blueprint, Flask, jsonify
from flask_swagger_ui import get_swaggerui_blueprint

from api.schemas import spec

bp = Blueprint("docs", __name__)


@bp.get("/openapi.json")
def openapi():
    return jsonify(spec.spec)


def init_docs(app: Flask) -> None:
    spec.register(app)
    app.register_blueprint(bp)
    app.register_blueprint(
        get_swaggerui_blueprint(
            "/docs",
            "/openapi.json",
            config={"app_name": "Upload pipeline API"},
            blueprint_name="swagger_ui",
        )
    )
