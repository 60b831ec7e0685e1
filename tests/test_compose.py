"""docker-compose.yml: valid for Compose; every service runs one of the product's entry points."""

import shlex
import subprocess

import yaml
from sqlalchemy.engine import make_url

from tests.conftest import ROOT

ENTRY_POINTS = {
    "api": "gunicorn api:create_app()",
    "worker-uploads": "celery -A worker worker -Q uploads",
    "worker-metadata": "celery -A worker worker -Q metadata",
    "beat": "celery -A worker beat",
    "flower": "celery -A worker flower",
    "migrate": "alembic upgrade head",
    "create-bucket": "flask --app api create-bucket",
    "realtime": "python -m realtime",
}


def compose() -> dict:
    result = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_compose_file_is_valid_and_has_every_part():
    services = compose()["services"]
    assert set(services) == {
        "proxy",
        "redis",
        "postgres",
        "minio",
        "secrets",
        "store-setup",
        *ENTRY_POINTS,
    }


def test_app_services_run_spec_entry_points():
    services = compose()["services"]
    for name, entry in ENTRY_POINTS.items():
        command = services[name]["command"]
        words = command if isinstance(command, list) else shlex.split(command)
        assert " ".join(words).startswith(entry), (name, words)


def test_ordering_health_and_shared_staging():
    services = compose()["services"]
    for name in ("redis", "postgres", "minio", "api"):
        assert "healthcheck" in services[name], name
    api_deps = services["api"]["depends_on"]
    assert api_deps["migrate"]["condition"] == "service_completed_successfully"
    assert api_deps["redis"]["condition"] == "service_healthy"
    assert api_deps["create-bucket"]["condition"] == "service_completed_successfully"

    def staging(name):
        mounts = set()
        for volume in services[name]["volumes"]:
            if isinstance(volume, str):  # short syntax: source:target[:mode]
                source, target = volume.split(":")[:2]
            else:
                source, target = volume["source"], volume["target"]
            if target == "/staging":
                mounts.add(source)
        return mounts

    assert staging("api") == staging("worker-uploads") == {"staging"}
    env = services["api"]["environment"]
    assert env["S3_PUBLIC_ENDPOINT_URL"] == "http://localhost:8080"  # through the proxy
    assert env["STAGING_DIR"] == "/staging"
    assert "--conf=/secrets/flowerconfig.py" in services["flower"]["command"]


def test_scalable_services_have_no_fixed_names_or_host_ports():
    services = compose()["services"]
    for name in ("worker-uploads", "worker-metadata"):
        assert "container_name" not in services[name]
        assert "ports" not in services[name]


def test_the_proxy_is_the_only_published_port():
    services = compose()["services"]
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"proxy"}
    proxy = services["proxy"]
    assert proxy["image"].startswith("nginx:")
    mounts = [v["source"] if isinstance(v, dict) else v.split(":")[0] for v in proxy["volumes"]]
    assert any(m.endswith("deploy/nginx/nginx.conf.template") for m in mounts)
    assert proxy["environment"]["API_UPSTREAM"] == "api:5000"
    assert services["api"]["environment"]["TRUSTED_PROXY_COUNT"] == "1"
    assert services["api"]["environment"]["PUBLIC_BASE_URL"] == "http://localhost:8080"


def test_redis_keeps_its_data_on_a_volume():
    redis = compose()["services"]["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    assert any(
        (v["target"] if isinstance(v, dict) else v.split(":")[1]) == "/data"
        for v in redis["volumes"]
    )


def test_the_stack_is_closed_and_shares_one_signing_key():
    """v1 needs a token, as v2 does; with no SECRET_KEY given, the key every app container signs
    tokens with is the one generated into the shared app-var volume (never a short default)."""
    services = compose()["services"]
    for name in ("api", "worker-uploads", "beat", "migrate"):
        env = services[name]["environment"]
        assert env["V1_ACCESS"] == "token", name
        assert env["SECRET_KEY"] == "" and env["JWT_SECRET_KEY"] == "", name
        targets = {
            (v.split(":")[0], v.split(":")[1]) if isinstance(v, str) else (v["source"], v["target"])
            for v in services[name]["volumes"]
        }
        assert ("app-var", "/app/var") in targets, name


#: Variables that would carry a credential in the compose file itself.
CREDENTIALS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "MINIO_ROOT_USER",
    "MINIO_ROOT_PASSWORD",
    "POSTGRES_PASSWORD",
    "FLOWER_BASIC_AUTH",
)


def test_no_credential_has_a_default():
    """Every credential is generated per deployment (deploy/secrets.py), none is written in the
    compose file: the store's root, the database's password, Flower's, and the app's key,
    which is not the store's root."""
    services = compose()["services"]
    for name, service in services.items():
        env = service.get("environment") or {}
        assert not set(CREDENTIALS) & set(env), (name, set(CREDENTIALS) & set(env))
        if "DATABASE_URL" in env:  # its password comes from PGPASSFILE
            assert make_url(env["DATABASE_URL"]).password is None, name
    api_env = services["api"]["environment"]
    assert api_env["AWS_SHARED_CREDENTIALS_FILE"] == "/secrets/aws-credentials"
    assert services["minio"]["environment"]["MINIO_ROOT_PASSWORD_FILE"] == "minio-root-password"
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"].startswith("/run/secrets/")


def test_generated_credentials_are_random_private_and_kept(tmp_path):
    from deploy.secrets import generate

    first, second = tmp_path / "a", tmp_path / "b"
    assert "minio-root-password" in generate(first)
    generate(second)
    for name in ("minio-root-password", "app-secret-key", "postgres-password", "flower-password"):
        value = (first / name).read_text()
        assert len(value) >= 32 and value != (second / name).read_text()
        assert (first / name).stat().st_mode & 0o777 == 0o600
    kept = (first / "app-secret-key").read_text()
    assert generate(first) == [] and (first / "app-secret-key").read_text() == kept
    assert f"aws_secret_access_key = {kept}" in (first / "aws-credentials").read_text()
    assert (first / "minio-root-user").read_text() != (first / "app-access-key").read_text()
    flower = (first / "flowerconfig.py").read_text()
    assert flower == f"basic_auth = ['admin:{(first / 'flower-password').read_text()}']\n"


def test_the_store_aborts_abandoned_direct_uploads_and_lets_browsers_read_etags():
    """MinIO has no bucket lifecycle rule for incomplete multipart uploads nor bucket CORS: its
    environment does the same (other stores get the rules from ``create-bucket``)."""
    env = compose()["services"]["minio"]["environment"]
    assert env["MINIO_API_STALE_UPLOADS_EXPIRY"] == "48h"  # past UPLOAD_TTL (24 h)
    assert env["MINIO_API_CORS_ALLOW_ORIGIN"] == "*"
