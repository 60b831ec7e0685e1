"""Per-client rate limits kept in Redis, so they hold across every API process (README,
"Operations").

flask-limiter has no token bucket; docs/API.md's "10 requests/second with bursts of up to
20" is a pair of moving windows: ``20/second`` lets a burst of 20 through at once, and
``100/10 seconds`` holds the sustained rate to 10 a second. Uploads have their own
``5/minute``. ``GET /`` and ``/health/*`` are exempt.

If Redis stops answering, requests keep being served: limits fall back to per-process memory
(the default limits, for every route), flask-limiter logs the switch once, and Redis is probed
again with a back-off until it answers. Its sockets time out in 0.25 s, so no request waits long.

A refusal (429) carries ``X-RateLimit-Limit``, ``-Remaining`` and ``-Reset`` and ``Retry-After``
(docs/API.md); other replies carry none: the window's state is one more Redis round trip after
the limits' own, which every request would pay (bench/RESULTS.md).
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import time

from flask import Flask, Response, g, request
from flask_limiter import Limiter
from werkzeug.middleware.proxy_fix import ProxyFix

from common.settings import Settings

log = logging.getLogger(__name__)

REDIS_TIMEOUTS = {"socket_timeout": 0.25, "socket_connect_timeout": 0.25}
EXEMPT_BLUEPRINTS = ("health", "api_v1_health", "docs", "swagger_ui", "metrics")
#: Every upload route, of every version and mount.
UPLOAD_ENDPOINTS = ("files.upload", "api_v1_files.upload", "v2_files.upload")


def init_limits(app: Flask, settings: Settings) -> Limiter:
    """Attach a limiter to ``app``; trust ``X-Forwarded-For`` only for TRUSTED_PROXY_COUNT hops.

    Call after the blueprints are registered: the upload view is wrapped with its own limit.
    """
    if settings.trusted_proxy_count:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxy_count)
    limiter = Limiter(
        key_func=client_key,
        # Unmatched paths and wrong methods have no endpoint, which flask-limiter would exempt:
        # they count against the client like any request.
        request_identifier=lambda: request.endpoint or "unmatched",
        app=app,
        strategy="moving-window",
        # Application limits: one budget per client across all routes, not one per route.
        application_limits=[settings.ratelimit_default],
        in_memory_fallback=[settings.ratelimit_default],
        storage_uri=settings.redis_url,
        storage_options=REDIS_TIMEOUTS,
        headers_enabled=False,  # on refusals only: _refusal_headers
        swallow_errors=True,
        key_prefix="ratelimit",
        enabled=settings.ratelimit_enabled,
    )
    for name in EXEMPT_BLUEPRINTS:
        limiter.exempt(app.blueprints[name])
    # One upload budget per client, whichever version or mount the upload comes through.
    uploads = limiter.shared_limit(settings.ratelimit_upload, scope="uploads")
    wrapped = {}
    for endpoint in UPLOAD_ENDPOINTS:
        view = app.view_functions[endpoint]
        if view not in wrapped:
            wrapped[view] = uploads(view)
        app.view_functions[endpoint] = wrapped[view]
    # Guessing passwords: logins per client address and per username (whatever the address).
    # Registrations per client address: each one hashes a password.
    register = app.view_functions["v2_users.register"]
    app.view_functions["v2_users.register"] = limiter.limit(settings.ratelimit_register)(register)
    # The per-account budget does not hold an address that logged in to the account before:
    # guesses from elsewhere can lock strangers out, never the account's owner.
    login = app.view_functions["v2_auth.log_in"]
    login = limiter.limit(
        settings.ratelimit_login, key_func=login_name_key, exempt_when=known_client
    )(login)
    app.view_functions["v2_auth.log_in"] = limiter.limit(settings.ratelimit_login)(login)
    app.after_request(functools.partial(_refusal_headers, limiter))
    return limiter


def _refusal_headers(limiter: Limiter, response: Response) -> Response:
    """The limit that refused a request, nothing left of it, when its window frees a request,
    and how many seconds until then."""
    limit = limiter.current_limit if response.status_code == 429 else None
    if limit is None:
        return response
    try:
        reset_at, remaining = limit.reset_at, limit.remaining
    except Exception as exc:  # Redis went away since the refusal: the 429 goes out without them
        log.warning("rate limit headers not read: %s", exc)
        return response
    response.headers["X-RateLimit-Limit"] = str(limit.limit.amount)
    response.headers["X-RateLimit-Remaining"] = str(remaining)
    response.headers["X-RateLimit-Reset"] = str(reset_at)
    response.headers["Retry-After"] = str(max(0, reset_at - int(time.time())))
    return response


def login_name_key() -> str:
    """The account a login names, whatever the address, and whether it is named by username
    or by email address: one budget per account. A name of no account has a budget of its
    own (so guessing at names costs the same as guessing at passwords)."""
    if "login_key" in g:  # asked by the limit and by its exemption
        return g.login_key
    g.login_key = _login_name_key()
    return g.login_key


def _login_name_key() -> str:
    from api.bodies import is_text
    from api.services import accounts
    from common.accounts.users import account_named
    from common.models import identity_key

    body = request.get_json(silent=True)
    value = None
    if isinstance(body, dict):
        value = body.get("username") if body.get("username") is not None else body.get("email")
    if not isinstance(value, str) or not value or not is_text(value):
        return "login:-"  # refused by the route's validation
    with accounts().db.reading() as session:
        user = account_named(session, value)
    return f"login:user:{user.id}" if user else f"login:name:{identity_key(value)[:254]}"


def known_client() -> bool:
    """Whether this client has logged in to the account the request names before."""
    from api.services import accounts
    from common.accounts import logins

    key = login_name_key()
    if not key.startswith("login:user:"):
        return False
    user_id = int(key.rsplit(":", 1)[1])
    return logins.has_logged_in_from(accounts(), user_id, client_key())


def client_key() -> str:
    """The client a budget belongs to: its IPv4 address (also when written IPv4-mapped in
    IPv6), or its IPv6 /64 (one subscriber usually holds a whole /64)."""
    address = request.remote_addr or "unknown"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)
