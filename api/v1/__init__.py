"""Version 1 of the API: the original document's routes and shapes (docs/API.md), served at
the unversioned paths. Version 2 gets a package of its own beside this one, over the same
pipeline; ``BLUEPRINTS`` is what a version mounts."""

from api.v1 import files, users

BLUEPRINTS = (users.bp, files.bp)
