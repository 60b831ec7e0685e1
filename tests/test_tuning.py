"""Each tuning trick (api/tuning.py, worker/tuning.py) still applies to the libraries installed:
a library upgrade that moves what a trick leans on fails here, not silently in production."""

from __future__ import annotations

import gc
import inspect

import pytest

from api import tuning
from worker import tuning as worker_tuning


def test_gunicorn_still_reads_bodies_in_the_chunk_we_set():
    from gunicorn.http.unreader import SocketUnreader

    assert "max_body_chunk" in inspect.getsource(SocketUnreader.chunk)
    before = SocketUnreader.max_body_chunk
    try:
        assert tuning.apply_body_chunk(4096)
        assert SocketUnreader.max_body_chunk == 4096
    finally:
        SocketUnreader.max_body_chunk = before


def test_gunicorn_still_writes_its_own_errors_through_util_write_error():
    from gunicorn import util
    from gunicorn.workers import base

    assert "util.write_error" in inspect.getsource(base.Worker.handle_error)
    before = util.write_error
    try:
        assert tuning.apply_json_errors(print)
        assert util.write_error is print
    finally:
        util.write_error = before


def test_glibc_takes_every_malloc_setting():
    assert tuning.apply_malloc()


def test_start_up_objects_are_frozen():
    try:
        assert tuning.apply_gc_freeze()
        assert gc.get_freeze_count() > 0
        assert worker_tuning.freeze()
    finally:
        gc.unfreeze()


def test_flask_still_has_the_private_method_the_orjson_replies_use():
    from flask.json.provider import DefaultJSONProvider

    assert callable(getattr(DefaultJSONProvider, "_prepare_response_obj", None))


@pytest.mark.parametrize("module", [tuning, worker_tuning])
def test_each_trick_has_its_switch(module, monkeypatch):
    variable = "API_TUNING_OFF" if module is tuning else "WORKER_TUNING_OFF"
    for name in module.TRICKS:
        monkeypatch.setenv(variable, f"other,{name}")
        assert not module.enabled(name)
        monkeypatch.setenv(variable, "all")
        assert not module.enabled(name)
        monkeypatch.delenv(variable)
        assert module.enabled(name)
