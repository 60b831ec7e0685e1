"""Password hashing: argon2id with argon2-cffi's defaults (RFC 9106's second recommended
parameter set: t=3, m=64 MiB, p=4). Hashes made with older parameters are re-hashed at the next
successful login."""

from __future__ import annotations

import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_LENGTH, MAX_LENGTH = 8, 256

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify(password_hash: str | None, password: str) -> bool:
    """True when ``password`` matches. Without a hash (an unknown user, a user without a
    password) a dummy hash is checked instead, so the answer takes as long either way."""
    try:
        return _hasher.verify(password_hash or _dummy_hash(), password) and bool(password_hash)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


@functools.cache
def _dummy_hash() -> str:
    return _hasher.hash("a password nobody has")
