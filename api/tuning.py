"""Every trick of the API process that leans on a library's internals, each with its switch.

``API_TUNING_OFF=name[,name...]`` turns tricks off (all of them: ``all``); tests/test_tuning.py
fails when a library upgrade makes one stop applying. gunicorn.conf.py applies them.

- ``body_chunk``: gunicorn receives a body of known length up to 1 MiB per recv() and copies
  what it received two or three times on the way to the application; with eight 16 MiB uploads
  in flight that is ~25 MiB of transient buffers per process. 128 KiB (its class attribute
  ``SocketUnreader.max_body_chunk``) reads as fast here and keeps a process near its idle size.
- ``json_errors``: gunicorn answers requests it cannot parse itself, with an HTML page and no
  setting to change it; its writer (``gunicorn.util.write_error``) is replaced by one that
  writes the API's JSON error shape.
- ``malloc``: one malloc arena (threads allocate holding the GIL, so they rarely contend; each
  arena of its own multiplies resident memory), a fixed mmap threshold of 4 MiB (the body
  reader's 128 KiB buffers are reused from the heap instead of mapped, zero-filled and unmapped
  each time: a quarter of the CPU under upload load) and a trim threshold of 8 MiB.
- ``gc_freeze``: everything loaded at start-up (~120k long-lived objects: modules, mappings,
  schemas) is exempt from garbage collection; a full collection walked them all for ~60 ms
  with the GIL held, and every request in flight in the process waited.
- ``orjson_replies``: JSON replies written by orjson (api/replies.py), which needs Flask's
  private ``DefaultJSONProvider._prepare_response_obj``.
- ``hmac_only_jwt``: PyJWT imports ``cryptography`` for its RSA and EC algorithms whenever it
  is installed (another package may bring it: moto does in the development environment), 8 MiB
  in every API process; the API signs and checks HS256 alone. PyJWT is imported once with
  ``cryptography`` hidden, so it leaves those algorithms out (``jwt.algorithms.has_crypto``);
  anything else may still import ``cryptography`` afterwards.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import sys
from collections.abc import Callable

from common.settings import switched_on

TRICKS = ("body_chunk", "json_errors", "malloc", "gc_freeze", "orjson_replies", "hmac_only_jwt")
BODY_CHUNK = 128 * 1024

_M_ARENA_MAX, _M_MMAP_THRESHOLD, _M_TRIM_THRESHOLD = -8, -3, -1


def enabled(name: str) -> bool:
    return switched_on("API_TUNING_OFF", name)


def apply_body_chunk(size: int = BODY_CHUNK) -> bool:
    if not enabled("body_chunk"):
        return False
    from gunicorn.http.unreader import SocketUnreader

    SocketUnreader.max_body_chunk = size
    return True


def apply_json_errors(writer: Callable) -> bool:
    if not enabled("json_errors"):
        return False
    from gunicorn import util

    util.write_error = writer
    return True


def apply_malloc() -> bool:
    """True when glibc took every setting (elsewhere there is nothing to tune)."""
    if not enabled("malloc"):
        return False
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        settings = (
            (_M_ARENA_MAX, 1),
            (_M_MMAP_THRESHOLD, 4 * 1024 * 1024),
            (_M_TRIM_THRESHOLD, 8 * 1024 * 1024),
        )
        return all(libc.mallopt(option, value) == 1 for option, value in settings)
    return False


def apply_hmac_only_jwt() -> bool:
    """True when PyJWT was imported here without ``cryptography`` (before anything else
    imported either)."""
    if not enabled("hmac_only_jwt") or "jwt" in sys.modules or "cryptography" in sys.modules:
        return False
    sys.modules["cryptography"] = None  # an import of it raises ModuleNotFoundError
    try:
        import jwt.algorithms  # noqa: F401
    finally:
        del sys.modules["cryptography"]
    return True


def apply_gc_freeze() -> bool:
    if not enabled("gc_freeze"):
        return False
    gc.collect()
    gc.freeze()
    return True
