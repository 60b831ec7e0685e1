"""Each tuning trick (api/tuning.py, worker/tuning.py) still applies to the libraries installed,
and its switch turns it off: each is checked by its effect on the library (or the process),
with the switch on and off. A library upgrade that moves what a trick leans on fails here, not
silently in production."""

from __future__ import annotations

import gc
import inspect
import subprocess
import sys
import textwrap

import pytest

from api import tuning
from testkit.processes import ROOT
from worker import tuning as worker_tuning


@pytest.fixture
def restored():
    """Library state the tricks change, put back afterwards."""
    from gunicorn import util
    from gunicorn.http.unreader import SocketUnreader

    before = SocketUnreader.max_body_chunk, util.write_error
    yield
    SocketUnreader.max_body_chunk, util.write_error = before
    gc.unfreeze()


@pytest.mark.parametrize("off", [False, True])
def test_gunicorn_reads_bodies_in_the_chunk_we_set_unless_switched_off(off, restored, monkeypatch):
    from gunicorn.http.unreader import SocketUnreader

    assert "max_body_chunk" in inspect.getsource(SocketUnreader.chunk)
    monkeypatch.setenv("API_TUNING_OFF", "body_chunk" if off else "")
    shipped = SocketUnreader.max_body_chunk
    tuning.apply_body_chunk(4096)
    assert SocketUnreader.max_body_chunk == (shipped if off else 4096)


@pytest.mark.parametrize("off", [False, True])
def test_gunicorn_writes_its_own_errors_through_ours_unless_switched_off(
    off, restored, monkeypatch
):
    from gunicorn import util
    from gunicorn.workers import base

    assert "util.write_error" in inspect.getsource(base.Worker.handle_error)
    monkeypatch.setenv("API_TUNING_OFF", "json_errors" if off else "")
    shipped = util.write_error
    tuning.apply_json_errors(print)
    assert util.write_error is (shipped if off else print)


@pytest.mark.parametrize("off", [False, True])
def test_start_up_objects_are_frozen_unless_switched_off(off, restored, monkeypatch):
    gc.unfreeze()
    monkeypatch.setenv("API_TUNING_OFF", "gc_freeze" if off else "")
    monkeypatch.setenv("WORKER_TUNING_OFF", "gc_freeze" if off else "")
    tuning.apply_gc_freeze()
    assert (gc.get_freeze_count() > 0) is not off
    gc.unfreeze()
    worker_tuning.freeze()
    assert (gc.get_freeze_count() > 0) is not off


def _run(code: str, **env: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


#: Threads that allocate at once, then glibc's own account of its heaps (arenas).
ARENAS = """
    import ctypes, threading
    from api import tuning
    tuning.apply_malloc()
    gate = threading.Barrier(8)
    def work():
        gate.wait()
        blocks = [bytearray(256) for _ in range(20000)]
    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads: t.start()
    for t in threads: t.join()
    libc = ctypes.CDLL("libc.so.6")
    libc.open_memstream.restype = ctypes.c_void_p
    libc.malloc_info.argtypes = (ctypes.c_int, ctypes.c_void_p)
    libc.fclose.argtypes = (ctypes.c_void_p,)
    size, buffer = ctypes.c_size_t(), ctypes.c_char_p()
    stream = libc.open_memstream(ctypes.byref(buffer), ctypes.byref(size))
    libc.malloc_info(0, stream)
    libc.fclose(stream)
    print(ctypes.string_at(buffer, size.value).decode().count("<heap nr="))
"""


def test_glibc_keeps_one_arena_unless_switched_off():
    assert _run(ARENAS) == "1"
    assert int(_run(ARENAS, API_TUNING_OFF="malloc")) > 1


@pytest.mark.parametrize("off", [False, True])
def test_replies_are_written_by_orjson_unless_switched_off(off, monkeypatch, tmp_path):
    from api import create_app
    from api.replies import OrjsonProvider
    from api.services import services
    from testkit.processes import settings_for

    monkeypatch.setenv("API_TUNING_OFF", "orjson_replies" if off else "")
    app = create_app(settings_for(tmp_path, database_url=f"sqlite:///{tmp_path / 'app.db'}"))
    assert isinstance(app.json, OrjsonProvider) is not off
    services(app).close()


#: What a worker's main process has loaded after its start-up work.
PRELOAD = """
    import sys
    from common.settings import Settings
    from common.storage import from_settings
    from worker import tuning
    settings = Settings.from_env()
    tuning.preload(settings, from_settings(settings))
    print(" ".join(m for m in ("pypdf", "magic", "PIL.PngImagePlugin") if m in sys.modules))
"""


def test_the_worker_loads_its_libraries_before_forking_unless_switched_off(tmp_path):
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
        "STORAGE_DIR": str(tmp_path / "storage"),
        "STAGING_DIR": str(tmp_path / "staging"),
    }
    assert _run(PRELOAD, **env) == "pypdf magic PIL.PngImagePlugin"
    assert _run(PRELOAD, WORKER_TUNING_OFF="preload", **env) == ""


def test_flask_still_has_the_private_method_the_orjson_replies_use():
    from flask.json.provider import DefaultJSONProvider

    assert callable(getattr(DefaultJSONProvider, "_prepare_response_obj", None))


def test_the_documents_schema_cache_writes_what_spectree_writes(monkeypatch):
    """api.schemas generates each model's JSON schema once, through spectree's private
    ``_add_model``: with models named again, in both modes, its document is spectree's own."""
    from pydantic import BaseModel
    from spectree import Response, SpecTree

    from api.schemas import _spec, _SpecTree

    class Inner(BaseModel):
        n: int = 1

    class Body(BaseModel):
        name: str
        inner: Inner

    class Reply(BaseModel):
        body: Body
        note: str | None = None

    def document() -> dict:
        spec = _spec("t", "1", "apidoc-test")
        for _ in range(3):
            spec.validate(json=Body, resp=Response(HTTP_200=Reply, HTTP_201=Body))(lambda: None)
        return spec.models

    generated = []
    spectree_own = SpecTree._add_model

    def counted(self, model, mode="validation"):
        generated.append((model, mode))
        return spectree_own(self, model, mode)

    monkeypatch.setattr(SpecTree, "_add_model", counted)
    cached = document()
    # Three decorations naming Body twice and Reply once (and the error model), each time:
    # every model and mode generated once.
    assert {(Body, "validation"), (Body, "serialization"), (Reply, "serialization")} <= set(
        generated
    )
    assert len(generated) == len(set(generated))
    monkeypatch.setattr(_SpecTree, "_add_model", spectree_own)
    plain = document()
    assert cached == plain and {"Body", "Reply"} <= set(plain)


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


#: The API's start-up as gunicorn.conf.py orders it: the trick, then the application.
HMAC_ONLY = """
    import sys
    from api import tuning
    tuning.apply_hmac_only_jwt()
    import jwt, jwt.algorithms
    from api import create_app
    create_app()
    token = jwt.encode({"sub": "1"}, "k" * 32, algorithm="HS256")
    assert jwt.decode(token, "k" * 32, algorithms=["HS256"]) == {"sub": "1"}
    print(jwt.algorithms.has_crypto, "cryptography.hazmat" in sys.modules)
"""


def test_the_api_loads_pyjwt_without_cryptography_unless_switched_off(tmp_path):
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
        "SECRET_KEY": "k" * 32,
        "STAGING_DIR": str(tmp_path / "staging"),
    }
    assert _run(HMAC_ONLY, **env) == "False False"
    # moto, a test dependency, brings cryptography here: PyJWT loads its algorithms when let
    # (redis-py imports the package's light top alone, to see whether it is there).
    assert _run(HMAC_ONLY, API_TUNING_OFF="hmac_only_jwt", **env) == "True True"
