"""Password hashing: argon2id with argon2-cffi's defaults (RFC 9106's second recommended
parameter set: t=3, m=64 MiB, p=4), which ``ARGON2_TIME_COST``, ``ARGON2_MEMORY_KIB`` and
``ARGON2_PARALLELISM`` change for a machine that needs it. Hashes made with other parameters are
re-hashed at the next successful login.

Each hash takes ~220 ms of CPU and 64 MiB: at most ``ARGON2_CONCURRENCY`` (2) run at once in
a process; a log-in or registration beyond that is answered 503 with ``Retry-After`` at once
rather than queued, so password work can never take the memory or the threads uploads need.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_LENGTH, MAX_LENGTH = 8, 256


@functools.cache
def _hasher() -> PasswordHasher:
    """Made on first use, from the process's environment."""
    defaults = PasswordHasher()
    return PasswordHasher(
        time_cost=int(os.environ.get("ARGON2_TIME_COST", defaults.time_cost)),
        memory_cost=int(os.environ.get("ARGON2_MEMORY_KIB", defaults.memory_cost)),
        parallelism=int(os.environ.get("ARGON2_PARALLELISM", defaults.parallelism)),
    )


#: How many hashes a process computes at once.
CONCURRENCY = int(os.environ.get("ARGON2_CONCURRENCY", "2"))
_slots = threading.BoundedSemaphore(CONCURRENCY)


class Busy(Exception):
    """Every slot for password work in this process is taken: try again shortly."""


@contextmanager
def _slot() -> Iterator[None]:
    if not _slots.acquire(timeout=0.05):
        raise Busy
    try:
        yield
    finally:
        _slots.release()


def hash_password(password: str) -> str:
    with _slot():
        return _hasher().hash(password)


def verify(password_hash: str | None, password: str) -> bool:
    """True when ``password`` matches. Without a hash (an unknown user, a user without a
    password) a dummy hash is checked instead, so the answer takes as long either way."""
    with _slot():
        try:
            checked = _hasher().verify(password_hash or _dummy_hash(), password)
            return checked and bool(password_hash)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher().check_needs_rehash(password_hash)


@functools.cache
def _dummy_hash() -> str:
    return _hasher().hash("a password nobody has")
