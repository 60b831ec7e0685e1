"""Which host the API's generated URLs name (``download_url``, ``status_url``, ``Location``,
redirects, the docs page): never a client's ``Host`` header unchecked.

- PUBLIC_BASE_URL set: every request is seen as addressed to it (scheme, host, path prefix),
  whatever its Host header says.
- Unset: a request whose Host is not in ALLOWED_HOSTS is refused with 400 ``HOST_NOT_ALLOWED``
  (Flask's ``TRUSTED_HOSTS``, as Django's ALLOWED_HOSTS); ``*`` allows any host.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask

from common.settings import Settings


class PublicBaseUrl:
    """WSGI middleware: the request's scheme, host and script root are the public base URL's."""

    def __init__(self, app, base_url: str) -> None:
        self.app = app
        parts = urlsplit(base_url)
        self.scheme, self.host, self.root = parts.scheme, parts.netloc, parts.path.rstrip("/")

    def __call__(self, environ, start_response):
        environ["wsgi.url_scheme"] = self.scheme
        environ["HTTP_HOST"] = self.host
        environ.pop("HTTP_X_FORWARDED_HOST", None)
        if self.root:
            environ["SCRIPT_NAME"] = self.root
        return self.app(environ, start_response)


def init_hosts(app: Flask, settings: Settings) -> None:
    if settings.public_base_url:
        app.wsgi_app = PublicBaseUrl(app.wsgi_app, settings.public_base_url)
    elif "*" not in settings.allowed_hosts:
        app.config["TRUSTED_HOSTS"] = list(settings.allowed_hosts)
