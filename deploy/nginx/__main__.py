"""Render the front proxy's configuration for a host install: ``python -m deploy.nginx``.

Reads the same environment as the API (MAX_UPLOAD_MB, UPLOAD_PART_MB, S3_BUCKET) plus LISTEN
(default ``0.0.0.0:8080``), API_UPSTREAM (``127.0.0.1:5000``), STORE_UPSTREAM (``127.0.0.1:9000``),
FLOWER_UPSTREAM (``127.0.0.1:5555``) and REALTIME_UPSTREAM (``127.0.0.1:5001``), and prints
nginx.conf. The nginx container of docker-compose.yml renders the same template.
"""

from __future__ import annotations

import os
import string
import sys
from pathlib import Path

TEMPLATE = Path(__file__).with_name("nginx.conf.template")


def render(values: dict[str, str]) -> str:
    """The template with its ``${NAME}`` variables replaced (nginx's own ``$name`` kept)."""
    text = TEMPLATE.read_text()
    missing = sorted(
        {m.group("braced") for m in string.Template.pattern.finditer(text) if m.group("braced")}
        - set(values)
    )
    if missing:
        raise KeyError(f"no value for {', '.join(missing)}")
    return string.Template(text).safe_substitute(values)


def values_from(environ: dict[str, str]) -> dict[str, str]:
    max_mb = int(environ.get("MAX_UPLOAD_MB", "16"))
    return {
        "LISTEN": environ.get("LISTEN", "0.0.0.0:8080"),
        "API_UPSTREAM": environ.get("API_UPSTREAM", "127.0.0.1:5000"),
        "STORE_UPSTREAM": environ.get("STORE_UPSTREAM", "127.0.0.1:9000"),
        "FLOWER_UPSTREAM": environ.get("FLOWER_UPSTREAM", "127.0.0.1:5555"),
        "REALTIME_UPSTREAM": environ.get("REALTIME_UPSTREAM", "127.0.0.1:5001"),
        "S3_BUCKET": environ.get("S3_BUCKET", "uploads"),
        "MAX_UPLOAD_MB": str(max_mb),
        "CLIENT_MAX_BODY_SIZE": f"{max_mb + 1}m",
        "PART_MAX_BODY_SIZE": f"{int(environ.get('UPLOAD_PART_MB', '8'))}m",
    }


if __name__ == "__main__":
    sys.stdout.write(render(values_from(dict(os.environ))))
