"""Who a bearer credential stands for, outside the API's request cycle: the realtime process
checks access tokens and API keys exactly as the API does (``api.auth``), and asks again while
a connection stays open, so that a revoked one is noticed.

- an access token: an HS256 JWT signed with JWT_SECRET_KEY (SECRET_KEY), ``type`` "access",
  unexpired, whose login (``sid``) is live (``logins.login_state``: revocation, new password,
  deleted account, SESSION_MAX_AGE);
- an API key (``upk_...``): known and not revoked (``keys.key_entry``).

Who the holder is (name, admin) is the account's now, never a token's claims.
"""

from __future__ import annotations

from dataclasses import dataclass

import jwt

from common.accounts import Accounts, keys, logins

FILES_READ, FILES_WRITE = "files:read", "files:write"
#: Managing one's keys and logins: a person who logged in with a password, never a key.
ACCOUNT = "account"
#: Every scope a password login has.
LOGIN_SCOPES = frozenset({FILES_READ, FILES_WRITE, ACCOUNT})
#: Longer credentials are refused before any parsing (a JWT here is ~400 bytes).
MAX_TOKEN_LENGTH = 4096
#: The ``WWW-Authenticate`` challenge of a 401 (RFC 6750).
REALM = 'Bearer realm="upload-pipeline"'


def bearer(header: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value; None when it is not of that
    form (the API and the realtime process answer it alike)."""
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


@dataclass(frozen=True)
class Holder:
    user_id: int
    username: str
    is_admin: bool
    scopes: frozenset[str]
    #: What to ask again while the holder stays connected: ("login", session id) or
    #: ("key", the key's digest).
    ref: tuple[str, str]


def holder_of(accounts: Accounts, token: str) -> Holder | None:
    """The holder of ``token`` (an access token or an API key); None when it is not valid."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    if token.startswith(keys.PREFIX):
        return recheck(accounts, ("key", keys.digest_of(token)))
    try:
        claims = jwt.decode(
            token,
            accounts.settings.resolved_jwt_secret_key(),
            algorithms=["HS256"],
            options={"require": ["exp", "sub"]},
        )
    except (jwt.PyJWTError, ValueError, TypeError):
        return None
    sid, sub = claims.get("sid"), str(claims.get("sub", ""))
    if claims.get("type") != "access" or not isinstance(sid, str) or not sub.isdigit():
        return None
    holder = recheck(accounts, ("login", sid))
    return holder if holder is not None and holder.user_id == int(sub) else None


def recheck(accounts: Accounts, ref: tuple[str, str]) -> Holder | None:
    """The holder behind ``ref`` now; None once the login ended or the key was revoked."""
    kind, value = ref
    if kind == "login":
        state = logins.login_state(accounts, value)
        if state is None:
            return None
        return Holder(state["user"], state["username"], state["admin"], LOGIN_SCOPES, ref)
    entry = keys.key_entry(accounts, value)
    if entry is None:
        return None
    scopes = frozenset(entry["scopes"])
    return Holder(entry["user"], entry["username"], entry["admin"], scopes, ref)
