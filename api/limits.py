"""Per-client rate limits kept in Redis, so they hold across every API process (SPEC §5).

flask-limiter has no token bucket; the seed's "10 requests/second with bursts of up to 20" is a
pair of moving windows: ``20/second`` lets a burst of 20 through at once, ``100/10 seconds`` holds
the sustained rate to 10 a second. Uploads have their own ``5/minute``. ``GET /`` and
``/health/*`` are exempt.

If Redis stops answering, requests keep being served: limits fall back to per-process memory
(the default limits, for every route), flask-limiter logs the switch once, and Redis is probed
again with a back-off until it answers. Its sockets time out in 0.25 s, so no request waits long.
"""

from __future__ import annotations

from flask import Flask, request
from flask_limiter import Limiter
from werkzeug.middleware.proxy_fix import ProxyFix

from common.settings import Settings

REDIS_TIMEOUTS = {"socket_timeout": 0.25, "socket_connect_timeout": 0.25}
EXEMPT_BLUEPRINTS = ("health", "docs", "swagger_ui", "metrics")


def init_limits(app: Flask, settings: Settings) -> Limiter:
    """Attach a limiter to ``app``; trust ``X-Forwarded-For`` only for TRUSTED_PROXY_COUNT hops.

    Call after the blueprints are registered: the upload view is wrapped with its own limit.
    """
    if settings.trusted_proxy_count:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxy_count)
    limiter = Limiter(
        key_func=lambda: request.remote_addr or "unknown",
        app=app,
        strategy="moving-window",
        # Application limits: one budget per client across all routes, not one per route.
        application_limits=[settings.ratelimit_default],
        in_memory_fallback=[settings.ratelimit_default],
        storage_uri=settings.redis_url,
        storage_options=REDIS_TIMEOUTS,
        headers_enabled=True,
        swallow_errors=True,
        key_prefix="ratelimit",
        enabled=settings.ratelimit_enabled,
    )
    for name in EXEMPT_BLUEPRINTS:
        limiter.exempt(app.blueprints[name])
    upload = app.view_functions["files.upload"]
    app.view_functions["files.upload"] = limiter.limit(settings.ratelimit_upload)(upload)
    return limiter
