"""Every setting of the service, read once from the environment (README, "Configuration").

API processes, workers and beat all build the same ``Settings`` with ``Settings.from_env()``.
A bad value raises ``SettingsError`` whose message is one line naming the variable; the entry
points print that line and exit without a traceback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from common.registry import EXTENSIONS

DEFAULT_EXTENSIONS = EXTENSIONS  # every extension the registry has a content check for


#: S3's longest presigned URL (SigV4): seven days.
MAX_PRESIGNED_TTL = 604800


#: The shortest key that may sign tokens (HS256 wants a key as long as its hash, RFC 7518 §3.2).
MIN_SIGNING_KEY_BYTES = 32


class SettingsError(ValueError):
    """A setting has a value the service cannot run with."""


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("must be zero or more")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("must be a positive number")
    return value


def _bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("must be true or false")


def _database_url(raw: str) -> str:
    make_url(raw)  # raises ArgumentError on nonsense
    return raw


def _redis_url(raw: str) -> str:
    """A TCP address: the broker (kombu), the rate limiter and the publisher each spell a
    Unix socket differently, so one ``unix://`` URL cannot serve them all."""
    if not raw.startswith(("redis://", "rediss://")):
        raise ValueError("must start with redis:// or rediss:// (a Unix socket is not supported)")
    return raw


def _backend(raw: str) -> str:
    value = raw.strip().lower()
    if value not in {"filesystem", "s3"}:
        raise ValueError("must be 'filesystem' or 's3'")
    return value


def _extensions(raw: str) -> tuple[str, ...]:
    items = tuple(dict.fromkeys(p.strip().lower().lstrip(".") for p in raw.split(",") if p.strip()))
    if not items:
        raise ValueError("must list at least one extension")
    unknown = [e for e in items if e not in DEFAULT_EXTENSIONS]
    if unknown:
        raise ValueError(f"no content check is known for: {', '.join(unknown)}")
    return items


def _url(raw: str) -> str:
    if not raw.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return raw.rstrip("/")


def _limit(raw: str) -> str:
    from limits import parse_many

    parse_many(raw)  # raises ValueError for a malformed limit string
    return raw


def _log_format(raw: str) -> str:
    value = raw.strip().lower()
    if value not in {"text", "json"}:
        raise ValueError("must be 'text' or 'json'")
    return value


def _addressing(raw: str) -> str:
    value = raw.strip().lower()
    if value not in {"auto", "path", "virtual"}:
        raise ValueError("must be auto, path or virtual")
    return value


def _choice(*allowed: str) -> Callable[[str], str]:
    def coerce(raw: str) -> str:
        value = raw.strip().lower()
        if value not in allowed:
            raise ValueError(f"must be {' or '.join(allowed)}")
        return value

    return coerce


def _sse(raw: str) -> str | None:
    value = raw.strip()
    if value not in {"", "AES256", "aws:kms", "aws:kms:dsse"}:
        raise ValueError("must be AES256, aws:kms or aws:kms:dsse")
    return value or None


def _networks(raw: str) -> tuple[str, ...]:
    import ipaddress

    items = tuple(p.strip() for p in raw.split(",") if p.strip())
    for item in items:
        ipaddress.ip_network(item, strict=False)  # raises ValueError for nonsense
    return items


def _hosts(raw: str) -> tuple[str, ...]:
    items = tuple(p.strip().lower() for p in raw.split(",") if p.strip())
    if not items:
        raise ValueError("must list at least one host name, or *")
    return items


def switched_on(variable: str, name: str) -> bool:
    """False when the environment variable ``variable`` (a comma-separated list) names
    ``name`` or says ``all``: the switches of the tuning tricks (api/ and worker/tuning.py)."""
    off = {part.strip() for part in os.environ.get(variable, "").split(",")}
    return name not in off and "all" not in off


def _setting(env: str, default: Any, coerce: Callable[[str], Any] = str) -> Any:
    return field(default=default, metadata={"env": env, "coerce": coerce})


@dataclass(frozen=True)
class Settings:
    """Typed settings; field metadata names the environment variable and its coercer."""

    database_url: str = _setting("DATABASE_URL", "sqlite:///var/app.db", _database_url)
    redis_url: str = _setting("REDIS_URL", "redis://localhost:6379/0", _redis_url)
    storage_backend: str = _setting("STORAGE_BACKEND", "filesystem", _backend)
    storage_dir: str = _setting("STORAGE_DIR", "var/storage")
    s3_bucket: str | None = _setting("S3_BUCKET", None)
    s3_endpoint_url: str | None = _setting("S3_ENDPOINT_URL", None, _url)
    s3_public_endpoint_url: str | None = _setting("S3_PUBLIC_ENDPOINT_URL", None, _url)
    s3_region: str = _setting("S3_REGION", "us-east-1")
    # How the bucket is named in URLs: path (/bucket/key), virtual (bucket.host/key), or auto:
    # path on a custom endpoint, virtual on AWS except for bucket names with dots.
    s3_addressing_style: str = _setting("S3_ADDRESSING_STYLE", "auto", _addressing)
    # Server-side encryption of pushed objects: AES256, aws:kms (with an optional key id).
    s3_sse: str | None = _setting("S3_SSE", None, _sse)
    s3_sse_kms_key_id: str | None = _setting("S3_SSE_KMS_KEY_ID", None)
    staging_dir: str = _setting("STAGING_DIR", "var/staging")
    max_upload_mb: int = _setting("MAX_UPLOAD_MB", 16, _positive_int)
    allowed_extensions: tuple[str, ...] = _setting(
        "ALLOWED_EXTENSIONS", DEFAULT_EXTENSIONS, _extensions
    )
    presigned_url_ttl: int = _setting("PRESIGNED_URL_TTL", 300, _positive_int)
    ratelimit_default: str = _setting("RATELIMIT_DEFAULT", "20/second;100/10 seconds", _limit)
    ratelimit_upload: str = _setting("RATELIMIT_UPLOAD", "5/minute", _limit)
    ratelimit_enabled: bool = _setting("RATELIMIT_ENABLED", True, _bool)
    trusted_proxy_count: int = _setting("TRUSTED_PROXY_COUNT", 0, _non_negative_int)
    secret_key: str | None = _setting("SECRET_KEY", None)
    log_format: str = _setting("LOG_FORMAT", "text", _log_format)
    # The address clients reach the service by: every URL the API generates starts with it.
    # Unset, the Host of each request is used, if ALLOWED_HOSTS lists it ('*': any).
    public_base_url: str | None = _setting("PUBLIC_BASE_URL", None, _url)
    allowed_hosts: tuple[str, ...] = _setting("ALLOWED_HOSTS", ("localhost", "127.0.0.1"), _hosts)
    # Who may read /metrics (client addresses as the rate limiter sees them); empty: nobody.
    metrics_allow: tuple[str, ...] = _setting(
        "METRICS_ALLOW", ("127.0.0.0/8", "::1/128"), _networks
    )
    # Bounds on dependencies that go silent (nothing refused, nothing answered).
    # The longest a PostgreSQL statement may take, and a silent server is waited for.
    database_timeout: float = _setting("DATABASE_TIMEOUT", 2.0, _positive_float)
    # A publish waits this long for a silent Redis before the outbox keeps the work.
    broker_publish_timeout: float = _setting("BROKER_PUBLISH_TIMEOUT", 1.0, _positive_float)
    # The workers' S3 requests: connect and read timeouts, and attempts per request.
    s3_connect_timeout: float = _setting("S3_CONNECT_TIMEOUT", 3.0, _positive_float)
    s3_read_timeout: float = _setting("S3_READ_TIMEOUT", 30.0, _positive_float)
    s3_max_attempts: int = _setting("S3_MAX_ATTEMPTS", 3, _positive_int)
    # Pipeline tuning: operators and tests need them.
    ingest_max_retries: int = _setting("INGEST_MAX_RETRIES", 8, _non_negative_int)
    retry_backoff_max: int = _setting("RETRY_BACKOFF_MAX", 600, _positive_int)
    visibility_timeout: int = _setting("VISIBILITY_TIMEOUT", 3600, _positive_int)
    reconcile_interval: float = _setting("RECONCILE_INTERVAL", 15.0, _positive_float)
    outbox_stale_after: int = _setting("OUTBOX_STALE_AFTER", 3900, _positive_int)
    outbox_max_publishes: int = _setting("OUTBOX_MAX_PUBLISHES", 10, _positive_int)
    # A worker renews its claim on a file every third of this; a claim not renewed for this
    # long is taken back by the reconciler (its worker died), so a dead worker's files move
    # again within CLAIM_LEASE + RECONCILE_INTERVAL.
    claim_lease: int = _setting("CLAIM_LEASE", 60, _positive_int)
    # Each account's quota in MiB (0: none) unless it has its own (users set-quota).
    user_quota_mb: int = _setting("USER_QUOTA_MB", 0, _non_negative_int)
    # How long a file's events (live status, replay) are kept; beat prunes older ones.
    events_retention: int = _setting("EVENTS_RETENTION", 24 * 3600, _positive_int)
    # Direct uploads (docs/API.md, "Direct uploads"): the largest file, the size of each part
    # (S3: 5 MiB to 5 GiB, at most 10,000 parts), and how long an upload may stay incomplete
    # before beat aborts it and frees its reserved bytes.
    max_direct_upload_mb: int = _setting("MAX_DIRECT_UPLOAD_MB", 5120, _positive_int)
    upload_part_mb: int = _setting("UPLOAD_PART_MB", 8, _positive_int)
    upload_ttl: int = _setting("UPLOAD_TTL", 24 * 3600, _positive_int)
    # Where clients reach the realtime process (GET /api/v2 tells them); unset: the API's own
    # address, as behind the shipped proxy. The local stack gives it a port of its own.
    realtime_url: str | None = _setting("REALTIME_URL", None, _url)
    max_image_pixels: int = _setting("MAX_IMAGE_PIXELS", 50_000_000, _positive_int)
    # Accounts and tokens (docs/API.md, "Authentication"). v1 routes: 'open' (no credentials,
    # ownerless files only) or 'token' (credentials as in v2, the caller's files only).
    v1_access: str = _setting("V1_ACCESS", "token", _choice("open", "token"))
    # 'closed': only an admin (or the operator CLI) creates accounts.
    registration: str = _setting("REGISTRATION", "open", _choice("open", "closed"))
    # Signs access and refresh tokens; SECRET_KEY (or the generated key) when unset.
    jwt_secret_key: str | None = _setting("JWT_SECRET_KEY", None)
    jwt_access_ttl: int = _setting("JWT_ACCESS_TTL", 900, _positive_int)
    jwt_refresh_ttl: int = _setting("JWT_REFRESH_TTL", 30 * 24 * 3600, _positive_int)
    # A login ends this long after its password check, however often it is refreshed.
    session_max_age: int = _setting("SESSION_MAX_AGE", 30 * 24 * 3600, _positive_int)
    # Logins per client address, and per account.
    ratelimit_login: str = _setting("RATELIMIT_LOGIN", "10/minute", _limit)
    # Registrations per client address (each costs a password hash).
    ratelimit_register: str = _setting("RATELIMIT_REGISTER", "5/minute;20/hour", _limit)

    @classmethod
    def from_env_or_exit(cls) -> Settings:
        """Settings from the environment; a bad one ends the process with one line on stderr
        (``error: NAME=value is invalid: why``) and exit status 2: what every process type
        does at start."""
        try:
            return cls.from_env()
        except SettingsError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``); ``overrides`` win."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = f.metadata["env"]
            raw = environ.get(name)
            if raw is None or f.name in overrides:
                continue
            try:
                values[f.name] = f.metadata["coerce"](raw)
            except Exception as exc:  # every coercer failure becomes one line
                raise SettingsError(f"{name}={raw!r} is invalid: {exc}") from None
        values.update(overrides)
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        """Validate combinations of settings that no single coercer can see."""
        if self.storage_backend == "s3" and not self.s3_bucket:
            raise SettingsError("S3_BUCKET must be set when STORAGE_BACKEND=s3")
        if not 5 <= self.upload_part_mb <= 5120:
            raise SettingsError(
                f"UPLOAD_PART_MB={self.upload_part_mb} is invalid: S3's parts are 5 MiB to 5 GiB"
            )
        if -(-self.max_direct_upload_mb // self.upload_part_mb) > 10_000:
            raise SettingsError(
                f"MAX_DIRECT_UPLOAD_MB={self.max_direct_upload_mb} needs more than S3's 10,000"
                f" parts of UPLOAD_PART_MB={self.upload_part_mb}"
            )
        if self.presigned_url_ttl > MAX_PRESIGNED_TTL:
            raise SettingsError(
                f"PRESIGNED_URL_TTL={self.presigned_url_ttl} is invalid: S3 refuses URLs valid"
                f" for more than {MAX_PRESIGNED_TTL} seconds (7 days)"
            )
        if self.visibility_timeout <= self.retry_backoff_max:
            raise SettingsError(
                f"VISIBILITY_TIMEOUT={self.visibility_timeout} is invalid: it must be longer than"
                f" RETRY_BACKOFF_MAX={self.retry_backoff_max}, or Redis delivers a retrying task"
                " twice"
            )

        signing_key = self.jwt_secret_key or self.secret_key  # empty: generated (64 bytes)
        if signing_key and len(signing_key.encode()) < MIN_SIGNING_KEY_BYTES:
            variable = "JWT_SECRET_KEY" if self.jwt_secret_key else "SECRET_KEY"
            raise SettingsError(
                f"{variable} is too short to sign tokens: it has {len(signing_key.encode())}"
                f" bytes, at least {MIN_SIGNING_KEY_BYTES} are needed (e.g. the output of"
                " `python -c 'import secrets; print(secrets.token_hex(32))'`)"
            )

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    @property
    def public_s3_endpoint(self) -> str | None:
        return self.s3_public_endpoint_url or self.s3_endpoint_url

    def resolved_jwt_secret_key(self) -> str:
        return self.jwt_secret_key or self.resolved_secret_key()

    def resolved_secret_key(self) -> str:
        """SECRET_KEY, or one generated once into ``var/secret_key`` (mode 0600) and reused.

        The key is written whole to a temporary file and linked into place, so that processes
        starting together all read the one complete key (the first link wins); an empty or
        unreadable key file stops start-up instead of signing with an empty key.
        """
        if self.secret_key:
            return self.secret_key
        path = Path(self.storage_dir).parent / "secret_key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            _publish_new_key(path, secrets.token_hex(32))
        key = path.read_text().strip()
        if not key:
            raise SettingsError(f"{path} is empty: remove it to generate a key, or set SECRET_KEY")
        return key


def _publish_new_key(path: Path, key: str) -> None:
    """Write ``key`` to ``path`` unless a key is there already; never a partial file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".secret_key-")  # mode 0600
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(key)
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):  # another process was first: keep its key
            os.link(tmp, path)
    finally:
        os.unlink(tmp)
