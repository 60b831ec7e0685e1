"""Health routes: the root greeting and the storage probe."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, current_app, jsonify

from api import services
from api.schemas import Health, Hello, Response, spec
from common.fileinfo import iso_z
from common.storage import StorageError

bp = Blueprint("health", __name__)


@bp.get("/")
@spec.validate(resp=Response(HTTP_200=Hello), tags=["health"])
def hello():
    """A greeting: the API answers."""
    return jsonify({"message": "Hello World!"})


@bp.get("/health/storage")
@spec.validate(resp=Response(HTTP_200=Health, HTTP_503=Health), tags=["health"])
def storage_health():
    """Whether the object store answers (503 within 3 s when it does not)."""
    storage = services.pipeline().storage
    try:
        storage.health()
    except StorageError as exc:
        current_app.logger.warning("storage unhealthy: %s", exc)
        body, status = {"status": "unhealthy", "message": "Object Storage недоступен"}, 503
    else:
        body, status = {"status": "healthy", "message": "Object Storage доступен"}, 200
    body["timestamp"] = iso_z(datetime.now(UTC), millis=True)
    return jsonify(body), status
