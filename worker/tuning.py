"""The worker's start-up tricks, each with its switch: ``WORKER_TUNING_OFF=name[,name...]``
(or ``all``). tests/test_tuning.py fails when a library upgrade makes one stop applying.

- ``preload``: the slow start-up work (libmagic's database, Pillow's plugins, pypdf, the S3
  client, the database driver, the broker transport, the ORM mappers) is done once in Celery's
  main process before the pool forks; each pool process would otherwise do it on its first
  task, seconds of CPU on two cores during which nothing is pushed. Children inherit it all.
  The store client has opened no connection yet (its pool connects on first use), so sharing
  it across the fork is safe; database and broker connections are made per process.
- ``gc_freeze``: what is loaded then lives as long as the process: exempt from collection.
"""

from __future__ import annotations

import gc

from common.settings import switched_on

TRICKS = ("preload", "gc_freeze")


def enabled(name: str) -> bool:
    return switched_on("WORKER_TUNING_OFF", name)


def preload(settings, storage) -> bool:
    """Load in the main process what every pool process would load on its first task."""
    if not enabled("preload"):
        return False
    from sqlalchemy.orm import configure_mappers

    import common.extract  # noqa: F401 - pypdf, for the metadata task
    from common.db import Database
    from common.queue import Publisher
    from common.sniff import preload as load_sniffers

    load_sniffers()  # libmagic's database, Pillow's plugins
    storage.prepare()
    # Building a pipeline imports the database driver and the broker transport and sets up
    # the ORM mappers: do it once here (nothing connects yet); each child builds its own.
    Database(settings.database_url).dispose()
    Publisher(settings).close()
    configure_mappers()
    return True


def freeze() -> bool:
    if not enabled("gc_freeze"):
        return False
    gc.collect()
    gc.freeze()
    return True
