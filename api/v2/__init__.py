"""Version 2 of the API at ``/api/v2`` (docs/API.md, "Version 2"): accounts, tokens and API
keys, and file routes that always act for an authenticated caller."""

from api.v2 import auth, bulk, events, files, keys, uploads, usage, users

# bulk before files: /files/bulk is not a file's name.
BLUEPRINTS = (auth.bp, users.bp, keys.bp, usage.bp, events.bp, uploads.bp, bulk.bp, files.bp)
