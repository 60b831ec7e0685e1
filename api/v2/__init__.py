"""Version 2 of the API at ``/api/v2`` (docs/API.md, "Version 2"): accounts, tokens and API
keys, and file routes that always act for an authenticated caller."""

from api.v2 import auth, files, keys, users

BLUEPRINTS = (auth.bp, users.bp, keys.bp, files.bp)
