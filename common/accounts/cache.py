"""Redis in front of the database for the one lookup an authenticated request makes: is this
login session still valid, or what does this API key stand for.

The database is the record; Redis only remembers answers for ``TTL`` seconds. A miss (also
after Redis restarts empty) asks the database and fills the entry with ``SET NX``; a revocation
is written to the database first and then overwrites the entry with a tombstone, so a fill that
raced with it can never put a revoked credential back. While Redis does not answer, every
lookup asks the database. Should a revocation's tombstone not reach Redis (it was down at that
moment, and answering again for the readers), the revoked credential keeps working until its
cached answer expires: at most ``TTL`` seconds.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import redis

log = logging.getLogger(__name__)

TTL = 60
#: Outlives any fill that read the database before the revocation was committed.
TOMBSTONE_TTL = 2 * TTL
REVOKED = b"revoked"
#: The account behind a credential changed (demoted, promoted): ask the database, and do not
#: remember the answer until every fill that read the old state is over.
STALE = b"stale"
TIMEOUTS = {"socket_timeout": 0.25, "socket_connect_timeout": 0.25}


class AuthCache:
    def __init__(self, redis_url: str) -> None:
        self.redis = redis.Redis.from_url(redis_url, **TIMEOUTS)

    def lookup(self, key: str, load: Callable[[], bytes]) -> bytes:
        """The cached answer for ``key``, or ``load()``'s (from the database), remembered."""
        try:
            cached = self.redis.get(key)
        except (redis.RedisError, OSError):
            return load()
        if cached == STALE:
            return load()
        if cached is not None:
            return cached
        value = load()
        with contextlib.suppress(redis.RedisError, OSError):
            self.redis.set(key, value, ex=TTL, nx=True)
        return value

    def revoke(self, key: str) -> None:
        """Call after the revocation is committed to the database."""
        try:
            self.redis.set(key, REVOKED, ex=TOMBSTONE_TTL)
        except (redis.RedisError, OSError) as exc:
            log.warning(
                "revocation of %s not cached (Redis: %s); it holds within %d s", key, exc, TTL
            )

    def invalidate(self, key: str) -> None:
        """Call after a change of the account behind ``key`` is committed."""
        try:
            self.redis.set(key, STALE, ex=TOMBSTONE_TTL)
        except (redis.RedisError, OSError) as exc:
            log.warning("change of %s not cached (Redis: %s); it holds within %d s", key, exc, TTL)

    def close(self) -> None:
        self.redis.close()
