"""Credentials of the compose stack, generated on its first start into the ``secrets`` volume.

``python -m deploy.secrets DIR`` writes each file that is missing (never one that exists, so a
restart keeps them), mode 0600, owned by the user the app runs as:

- ``minio-root-user``, ``minio-root-password``: the store's root (used only by its setup);
- ``app-access-key``, ``app-secret-key`` and ``aws-credentials`` (boto3's shared file): the
  key the API and workers use, limited to the bucket (``deploy/minio/setup.sh``);
- ``postgres-password`` and ``pgpass`` (libpq's password file);
- ``flowerconfig.py``: Flower's basic auth, ``admin:<random>``.

No default credential works: each is random, 32 bytes or more, per deployment.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path


def generate(directory: Path) -> list[str]:
    """Write the missing files; the names written."""
    directory.mkdir(parents=True, exist_ok=True)
    values = {
        "minio-root-user": lambda: "root-" + secrets.token_hex(8),
        "minio-root-password": lambda: secrets.token_urlsafe(32),
        "app-access-key": lambda: "app-" + secrets.token_hex(8),
        "app-secret-key": lambda: secrets.token_urlsafe(32),
        "postgres-password": lambda: secrets.token_urlsafe(32),
        "flower-password": lambda: secrets.token_urlsafe(24),
    }
    written = [name for name, make in values.items() if _write(directory / name, make)]
    read = {name: (directory / name).read_text() for name in values}
    derived = {
        "aws-credentials": (
            "[default]\n"
            f"aws_access_key_id = {read['app-access-key']}\n"
            f"aws_secret_access_key = {read['app-secret-key']}\n"
        ),
        "pgpass": f"postgres:5432:app:app:{read['postgres-password']}\n",
        "flowerconfig.py": f"basic_auth = [{'admin:' + read['flower-password']!r}]\n",
    }
    for name, text in derived.items():  # always rewritten: they follow the values
        path = directory / name
        path.write_text(text)
        path.chmod(0o600)
    return written


def _write(path: Path, make) -> bool:
    if path.exists():
        return False
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(make())
    return True


if __name__ == "__main__":
    names = generate(Path(sys.argv[1] if len(sys.argv) > 1 else "/secrets"))
    print(f"secrets: generated {', '.join(names) or 'nothing (all present)'}")
