"""The app's services, typed: what routes and commands reach through ``services()`` (or the
shorthands below) rather than through string keys of ``app.extensions``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app

if TYPE_CHECKING:
    from flask_limiter import Limiter

    from api.auth.sessions import VerifiedTokens
    from api.fileops import UrlCache
    from common.accounts import Accounts
    from common.files.pipeline import Pipeline
    from common.settings import Settings

_KEY = "upload_pipeline"


@dataclass
class Services:
    settings: Settings
    pipeline: Pipeline
    accounts: Accounts
    download_urls: UrlCache
    verified_tokens: VerifiedTokens
    #: key digest -> when its last_used_at was last written (api/auth/keys.py)
    key_touches: dict[str, float] = field(default_factory=dict)
    limiter: Limiter | None = None

    def install(self, app: Flask) -> None:
        app.extensions[_KEY] = self

    def close(self) -> None:
        """Release database, broker and cache connections."""
        self.pipeline.close()
        self.accounts.close()


def services(app: Flask | Any = None) -> Services:
    """The services of ``app`` (default: the current one)."""
    return (app or current_app).extensions[_KEY]


def settings() -> Settings:
    return services().settings


def pipeline() -> Pipeline:
    return services().pipeline


def accounts() -> Accounts:
    return services().accounts
