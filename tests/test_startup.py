"""A store that can never work stops the API and the workers at start-up, with one line."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from tests.conftest import ROOT, free_port


@pytest.mark.parametrize(
    "argv",
    [
        ["-m", "gunicorn", "api:create_app()"],
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
    done = subprocess.run(
        [sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    errors = [line for line in (done.stdout + done.stderr).splitlines() if "error:" in line]
    assert len(errors) == 1 and "NoSuchBucket" in errors[0], done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr


@pytest.mark.parametrize("variable", ["JWT_SECRET_KEY", "SECRET_KEY"])
def test_a_short_signing_key_stops_start_up(variable, tmp_path):
    env = os.environ | {
        variable: "too-short",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
        "GUNICORN_BIND": f"127.0.0.1:{free_port()}",
        "STAGING_DIR": str(tmp_path / "staging"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "gunicorn", "api:create_app()"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0
    errors = [line for line in output.splitlines() if "error:" in line]
    assert len(errors) == 1 and f"{variable} is too short" in errors[0], output
    assert "Traceback" not in output
