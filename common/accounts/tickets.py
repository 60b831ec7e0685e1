"""Single-use tickets for clients that cannot send an Authorization header (a browser's
``EventSource``): ``POST /api/v2/events/ticket`` issues one for the caller's credential, valid
``TTL`` seconds; the realtime process redeems it once (``GETDEL``: a second use finds nothing)
and then asks whether that credential is still valid (``credentials.recheck``). Redis holds
only the ticket's digest, never a credential."""

from __future__ import annotations

import hashlib
import json
import secrets

import redis

from common.accounts import Accounts

TTL = 60
_PREFIX = "events-ticket:"


def _key(ticket: str) -> str:
    return _PREFIX + hashlib.sha256(ticket.encode()).hexdigest()


def issue(accounts: Accounts, ref: tuple[str, str]) -> str:
    """A new ticket standing for the credential ``ref`` (``credentials.Holder.ref``)."""
    ticket = "evt_" + secrets.token_urlsafe(32)
    accounts.cache.redis.set(_key(ticket), json.dumps(list(ref)), ex=TTL)
    return ticket


def redeem(accounts: Accounts, ticket: str) -> tuple[str, str] | None:
    """The credential a ticket stood for, once; None for an unknown, used or expired one."""
    if not ticket.startswith("evt_") or len(ticket) > 100:
        return None
    try:
        found = accounts.cache.redis.getdel(_key(ticket))
    except (redis.RedisError, OSError):
        return None
    if found is None:
        return None
    kind, value = json.loads(found)
    return kind, value
