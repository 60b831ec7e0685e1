"""Version 1 of the API: the first contract's routes and shapes (docs/API.md), served at
the unversioned paths and again under ``/api/v1`` (the same handlers). ``MOUNTS`` is each
blueprint with the name and prefix of its second mount."""

from api import health
from api.v1 import files, users

BLUEPRINTS = (users.bp, files.bp)
#: (blueprint, name, url_prefix) of the /api/v1 mounts.
MOUNTS = tuple((bp, f"api_v1_{bp.name}", "/api/v1") for bp in (health.bp, *BLUEPRINTS))
