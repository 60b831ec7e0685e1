"""Files: everything that changes a file, in one place (docs/ARCHITECTURE.md).

- ``states``: which status may follow which, and ``transition()``, the one place a status is
  written;
- ``pipeline``: the life of a file in stages (intake, ingest, metadata) over the services;
- ``actions``: the other changes of a file (name, category, tags), one named function each;
- ``queries``: reading files (the live ones, listings, counts), shared by every API version;
- ``labels``: tags and categories, their normal form and links;
- ``outbox``: work that must reach a worker, written with the change that needs it;
- ``reconcile``: the periodic pass that republishes, takes back and gives up.

Routes, tasks and commands call these; none of them writes a file's row itself.
"""
