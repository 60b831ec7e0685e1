"""Driving the pipeline directly in tests: a pipeline publishing to a Redis database no
worker consumes, and files staged and accepted without HTTP."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import select

from common.files.pipeline import Pipeline
from common.models import File, OutboxEntry
from common.naming import generate_name
from common.queue import Publisher
from common.staging import StagedUpload, staged_path
from common.storage import from_settings
from tests.conftest import REDIS_SERVER

if TYPE_CHECKING:
    from testkit.services import FaultEnv


def quiet_url(client) -> str:
    return f"{REDIS_SERVER}/{client.connection_pool.connection_kwargs['db']}"


def make_pipeline(stack, redis_url: str, **overrides) -> Pipeline:
    settings = replace(stack.settings, redis_url=redis_url, **overrides)
    return Pipeline(settings, stack.db, from_settings(settings), Publisher(settings))


def stage_bytes(
    pipeline: Pipeline, data: bytes, ext: str = "txt", original: str | None = None
) -> StagedUpload:
    now = datetime.now(UTC)
    name = generate_name(ext, now)
    path = staged_path(pipeline.settings.staging_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return StagedUpload(
        path, name, original or f"a.{ext}", ext, len(data), hashlib.sha256(data).hexdigest(), now
    )


def accept(pipeline: Pipeline, data: bytes, ext: str = "txt", original: str | None = None) -> File:
    return pipeline.accept(stage_bytes(pipeline, data, ext, original))


def status_of(pipeline: Pipeline, file_id: int) -> File:
    with pipeline.db.session() as session:
        return session.get(File, file_id)


def outbox_kinds(holder: Pipeline | FaultEnv, file_id: int) -> list[str]:
    """The kinds of ``file_id``'s outbox entries, in the database of ``holder``."""
    with holder.db.session() as session:
        rows = session.scalars(select(OutboxEntry.kind).where(OutboxEntry.file_id == file_id))
        return sorted(k.value for k in rows)
