"""The HTTP API: ``gunicorn 'api:create_app()'`` or ``flask --app api run``."""

from __future__ import annotations

from flask import Flask

from common.settings import Settings


def create_app(settings: Settings | None = None) -> Flask:
    """Build the API from ``settings`` (default: the environment)."""
    if settings is None:
        settings = Settings.from_env_or_exit()

    from api import errors, fileops, health, serve, tuning, v1, v2, web
    from api.auth import init_auth
    from api.auth.sessions import VerifiedTokens
    from api.cli import init_cli
    from api.docs import init_docs
    from api.headers import init_headers
    from api.hosts import init_hosts
    from api.limits import init_limits
    from api.observability import init_observability
    from api.replies import OrjsonProvider
    from api.schemas import VALIDATE_REPLIES
    from api.services import Services
    from common.accounts import Accounts
    from common.services import build_pipeline

    app = Flask(__name__)
    if tuning.enabled("orjson_replies"):
        app.json = OrjsonProvider(app)
    app.config["SECRET_KEY"] = settings.resolved_secret_key()
    app.config.setdefault(VALIDATE_REPLIES, app.debug)
    pipeline = build_pipeline(settings)
    services = Services(
        settings=settings,
        pipeline=pipeline,
        accounts=Accounts.from_settings(settings, pipeline.db),
        download_urls=fileops.UrlCache(settings.presigned_url_ttl),
        verified_tokens=VerifiedTokens(),
    )
    services.install(app)
    init_hosts(app, settings)
    errors.register_error_handlers(app)
    init_observability(app)
    init_headers(app)
    init_auth(app, settings)
    for blueprint in (health.bp, *v1.BLUEPRINTS, *v2.BLUEPRINTS, serve.bp, web.bp):
        app.register_blueprint(blueprint)
    for blueprint, name, prefix in v1.MOUNTS:
        app.register_blueprint(blueprint, name=name, url_prefix=prefix)
    init_docs(app)
    init_cli(app)
    services.limiter = init_limits(app, settings)
    return app
