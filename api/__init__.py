"""The HTTP API: ``gunicorn 'api:create_app()'`` or ``flask --app api run``."""

from __future__ import annotations

import sys

from flask import Flask

from common.settings import Settings, SettingsError


def create_app(settings: Settings | None = None) -> Flask:
    """Build the API from ``settings`` (default: the environment)."""
    if settings is None:
        settings = _settings_or_exit()

    from api import errors, fileops, health, serve, tuning, v1, v2
    from api.auth import init_auth
    from api.cli import init_cli
    from api.docs import init_docs
    from api.headers import init_headers
    from api.hosts import init_hosts
    from api.limits import init_limits
    from api.observability import init_observability
    from api.replies import OrjsonProvider
    from api.schemas import VALIDATE_REPLIES
    from common.services import build_pipeline

    app = Flask(__name__)
    if tuning.enabled("orjson_replies"):
        app.json = OrjsonProvider(app)
    app.config["SECRET_KEY"] = settings.resolved_secret_key()
    app.config.setdefault(VALIDATE_REPLIES, app.debug)
    app.extensions["settings"] = settings
    app.extensions["pipeline"] = build_pipeline(settings)
    app.extensions["download_urls"] = fileops.UrlCache(settings.presigned_url_ttl)
    init_hosts(app, settings)
    errors.register_error_handlers(app)
    init_observability(app)
    init_headers(app)
    init_auth(app, settings)
    for blueprint in (health.bp, *v1.BLUEPRINTS, *v2.BLUEPRINTS, serve.bp):
        app.register_blueprint(blueprint)
    for blueprint, name, prefix in v1.MOUNTS:
        app.register_blueprint(blueprint, name=name, url_prefix=prefix)
    init_docs(app)
    init_cli(app)
    app.extensions["limiter"] = init_limits(app, settings)
    return app


def _settings_or_exit() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
