"""Accounts: everything that changes a user, a login or an API key, in one place
(docs/ARCHITECTURE.md).

- ``users``: creating, naming, promoting, changing the password of and deleting accounts, and
  open v1's own users; one named ``do_*`` function each;
- ``logins``: password logins (sessions): opening, refreshing, revoking, their state;
- ``keys``: API keys: making, listing, revoking, what a key stands for;
- ``passwords``: argon2id hashes; ``usernames``: which names are allowed and look alike;
- ``cache``: Redis in front of the database for the lookup each authenticated request makes.

The API, the CLI and the workers use these through an ``Accounts`` (the database, the cache
and the settings); the API keeps only HTTP: tokens on the wire, scopes, replies.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.accounts.cache import AuthCache
from common.db import Database
from common.settings import Settings


@dataclass
class Accounts:
    """The services every account action works with."""

    db: Database
    cache: AuthCache
    settings: Settings

    @classmethod
    def from_settings(cls, settings: Settings, db: Database) -> Accounts:
        return cls(db, AuthCache(settings.redis_url), settings)

    def close(self) -> None:
        self.cache.close()
