"""What can never work stops the API (and the workers) at start-up, with one line: a store
that refuses, a short signing key, an address another server listens on."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
import requests

from testkit.processes import migrate, settings_env, settings_for
from tests.conftest import ROOT, free_port, start_gunicorn

API = ["-m", "gunicorn", "api:create_app()"]


def _refused(argv: list[str], env: dict[str, str]) -> list[str]:
    """Start a process that must refuse to: its ``error:`` lines, once it has stopped (with no
    traceback)."""
    done = subprocess.run(
        [sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "Traceback" not in output, output
    return [line for line in output.splitlines() if "error:" in line]


@pytest.mark.parametrize(
    "argv",
    [
        API,
        ["-m", "celery", "-A", "worker", "worker", "-Q", "uploads", "--without-mingle"],
    ],
    ids=["api", "worker"],
)
def test_a_bucket_that_does_not_exist_stops_start_up(argv, s3_endpoint, tmp_path):
    env = os.environ | {
        "STORAGE_BACKEND": "s3",
        "S3_BUCKET": f"absent-{uuid.uuid4().hex[:8]}",
        "S3_ENDPOINT_URL": s3_endpoint,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "GUNICORN_BIND": f"127.0.0.1:{free_port()}",
        "STAGING_DIR": str(tmp_path / "staging"),
    }
    errors = _refused(argv, env)
    assert len(errors) == 1 and "NoSuchBucket" in errors[0], errors


@pytest.mark.parametrize("variable", ["JWT_SECRET_KEY", "SECRET_KEY"])
def test_a_short_signing_key_stops_start_up(variable, tmp_path):
    env = os.environ | {
        variable: "too-short",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
        "GUNICORN_BIND": f"127.0.0.1:{free_port()}",
        "STAGING_DIR": str(tmp_path / "staging"),
    }
    errors = _refused(API, env)
    assert len(errors) == 1 and f"{variable} is too short" in errors[0], errors


def test_a_second_server_on_an_address_in_use_stops(tmp_path):
    """Each process's socket may share its port (SO_REUSEPORT, gunicorn.conf.py); another
    server started on the same address stops instead of quietly taking part of the
    connections."""
    database_url = f"sqlite:///{tmp_path / 'app.db'}"
    migrate(database_url)
    settings = settings_for(tmp_path, database_url=database_url)
    api = start_gunicorn(settings, tmp_path / "gunicorn.log")
    try:
        address = api.url.removeprefix("http://")
        env = os.environ | settings_env(settings) | {"GUNICORN_BIND": address}
        assert _refused(API, env) == [f"error: {address} is in use by another server"]
        assert requests.get(f"{api.url}/", timeout=5).status_code == 200
    finally:
        api.stop()
