import subprocess
import sys

import pytest

from common.settings import DEFAULT_EXTENSIONS, Settings, SettingsError
from testkit.processes import ROOT


def test_defaults_match_the_spec():
    settings = Settings.from_env({})
    assert settings.database_url == "sqlite:///var/app.db"
    assert settings.redis_url == "redis://localhost:6379/0"
    assert settings.storage_backend == "filesystem"
    assert settings.max_upload_bytes == 16 * 1024 * 1024
    assert settings.allowed_extensions == DEFAULT_EXTENSIONS
    assert settings.presigned_url_ttl == 300
    assert settings.trusted_proxy_count == 0


def test_values_are_coerced():
    settings = Settings.from_env(
        {"MAX_UPLOAD_MB": "2", "ALLOWED_EXTENSIONS": " PNG, .txt ,png", "PRESIGNED_URL_TTL": "60"}
    )
    assert settings.max_upload_bytes == 2 * 1024 * 1024
    assert settings.allowed_extensions == ("png", "txt")
    assert settings.presigned_url_ttl == 60


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAX_UPLOAD_MB", "lots"),
        ("MAX_UPLOAD_MB", "0"),
        ("STORAGE_BACKEND", "ftp"),
        ("REDIS_URL", "localhost:6379"),
        ("REDIS_URL", "unix:///run/redis.sock"),
        ("DATABASE_URL", "not a url"),
        ("ALLOWED_EXTENSIONS", "exe"),
        ("RATELIMIT_UPLOAD", "five per minute"),
        ("TRUSTED_PROXY_COUNT", "-1"),
    ],
)
def test_bad_value_names_the_variable(name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_s3_needs_a_bucket():
    with pytest.raises(SettingsError, match="S3_BUCKET"):
        Settings.from_env({"STORAGE_BACKEND": "s3"})


@pytest.mark.parametrize(
    "argv",
    [
        [sys.executable, "-m", "flask", "--app", "api", "routes"],
        [sys.executable, "-m", "celery", "-A", "worker", "report"],
    ],
)
def test_entry_points_stop_with_one_line(argv):
    env = {"PATH": "/usr/bin:/bin", "MAX_UPLOAD_MB": "huge"}
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "MAX_UPLOAD_MB='huge' is invalid" in result.stderr


def test_generated_secret_key_is_kept(tmp_path):
    settings = Settings.from_env({}, storage_dir=str(tmp_path / "var" / "storage"))
    first = settings.resolved_secret_key()
    assert len(first) == 64
    assert settings.resolved_secret_key() == first
    assert (tmp_path / "var" / "secret_key").read_text() == first


def _key_in_child(settings, barrier, results) -> None:
    barrier.wait()
    try:
        results.put(settings.resolved_secret_key())
    except Exception as exc:  # reported to the test, not lost in the child
        results.put(f"error: {exc}")


def test_processes_starting_together_share_one_complete_private_key(tmp_path):
    """Four processes released at once on a fresh var/ (as gunicorn's workers and the
    workers start), fifty times: every one reads the same, complete key, mode 0600."""
    import multiprocessing
    import stat

    context = multiprocessing.get_context("fork")
    for trial in range(50):
        settings = Settings.from_env({}, storage_dir=str(tmp_path / f"t{trial}" / "storage"))
        barrier, results = context.Barrier(4), context.Queue()
        children = [
            context.Process(target=_key_in_child, args=(settings, barrier, results))
            for _ in range(4)
        ]
        for child in children:
            child.start()
        keys = {results.get(timeout=30) for _ in children}
        for child in children:
            child.join(10)
        path = tmp_path / f"t{trial}" / "secret_key"
        assert keys == {path.read_text()} and len(path.read_text()) == 64, (trial, keys)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_an_empty_key_file_stops_start_up(tmp_path):
    (tmp_path / "secret_key").write_text("")
    settings = Settings.from_env({}, storage_dir=str(tmp_path / "storage"))
    with pytest.raises(SettingsError, match="secret_key is empty"):
        settings.resolved_secret_key()


CAP = str(Settings.retry_backoff_max)  # RETRY_BACKOFF_MAX's default


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"PRESIGNED_URL_TTL": "604801"}, "PRESIGNED_URL_TTL"),
        # a visibility timeout no longer than the longest retry countdown
        ({"VISIBILITY_TIMEOUT": CAP, "RETRY_BACKOFF_MAX": CAP}, "VISIBILITY_TIMEOUT"),
        ({"S3_SSE": "rot13"}, "S3_SSE"),
        ({"METRICS_ALLOW": "everyone"}, "METRICS_ALLOW"),
        ({"PUBLIC_BASE_URL": "files.example.com"}, "PUBLIC_BASE_URL"),
    ],
)
def test_settings_that_cannot_work_are_refused(environ, named):
    with pytest.raises(SettingsError, match=named) as caught:
        Settings.from_env(environ)
    assert "\n" not in str(caught.value)


def test_the_longest_url_s3_signs_is_accepted():
    assert Settings.from_env({"PRESIGNED_URL_TTL": "604800"}).presigned_url_ttl == 604800
