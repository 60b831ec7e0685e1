"""Direct uploads (docs/API.md, "Direct uploads"): a file declared first, its bytes sent in parts
to URLs the service signs, then completed.

- ``do_create_upload`` checks the part arithmetic, reserves the declared bytes against the
  owner's quota (``usage.admit``: one conditional UPDATE, so racing creates cannot both take the
  last room) and writes the upload and its ledger of parts, in one transaction.
- The ledger (``upload_parts``: number, size, sha256, ETag) is the service's record of what was
  received: resume and complete trust it.
- On the filesystem store each part is PUT to a URL the API serves (``part_url``, signed with
  SECRET_KEY, expiring), written straight to ``STAGING_DIR/uploads/<id>/`` while its length
  and sha256 are checked (``do_receive_part``); ``do_complete_upload`` assembles the parts into
  a staged file and hands it to the intake exactly as a multipart upload's (the reservation
  becomes the file's bytes; its worker then verifies the content and pushes it); a whole-file
  sha256 that differs from the declared one ends ``rejected`` at once.
- On S3 the upload is the store's own multipart upload of ``uploads/<id>``
  (``common.staging.direct_key``): each part URL is presigned by the store's keys and signs the
  part's length and, when declared, its ``x-amz-checksum-sha256``, so the store refuses what
  differs. The ledger learns what arrived from ListParts (``_synced``: parts the store has that
  it had not recorded; a part it recorded that the store lost must be sent again). Complete
  sends the ledger's ETags and the whole size, and records the file ``pending`` with the
  declared sha256 (or none); the worker then fetches the object, verifies it as any staged
  file, and copies it to its name inside the store (``Ingest``).
- Complete and abort are idempotent. ``expire_uploads`` (beat) aborts uploads left open past
  UPLOAD_TTL, in the store too, and frees their bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from common.files import outbox, states, usage
from common.files.pipeline import Pipeline
from common.models import (
    DirectUpload,
    File,
    FileStatus,
    OutboxKind,
    UploadPart,
    UploadState,
    utcnow,
)
from common.naming import generate_name
from common.registry import KINDS
from common.staging import StagedUpload, direct_key, remove_staged, staged_path
from common.storage import StorageError

log = logging.getLogger(__name__)

MIB = 1024 * 1024
#: A part URL's life (seconds): long enough for a slow link to send a part; fresh ones come
#: from ``POST /api/v2/uploads/{id}/parts``.
PART_URL_TTL = 3600
#: Bytes read from a request into a part file at a time.
CHUNK = 1024 * 1024


class UploadProblem(Exception):
    """A request about an upload that cannot be done as asked: ``code`` names it."""

    def __init__(self, code: str, detail: str, **facts) -> None:
        super().__init__(detail)
        self.code, self.detail, self.facts = code, detail, facts


@dataclass(frozen=True)
class Declared:
    owner_id: int
    original_name: str
    extension: str
    size: int
    sha256: str | None
    part_sha256: list[str] | None
    tags: list[str]
    category: str | None


def part_sizes(size: int, part_size: int) -> list[int]:
    """The size of each part of a file of ``size`` bytes (at least one part)."""
    count = max(1, -(-size // part_size))
    return [part_size] * (count - 1) + [size - part_size * (count - 1)]


def do_create_upload(pipeline: Pipeline, declared: Declared) -> DirectUpload:
    """A new open upload with its ledger; ``usage.QuotaExceeded`` when the declared bytes do not
    fit in the owner's quota; ``UploadProblem`` for part checksums that do not match the parts."""
    settings = pipeline.settings
    part_size = settings.upload_part_mb * MIB
    sizes = part_sizes(declared.size, part_size)
    if declared.part_sha256 is not None and len(declared.part_sha256) != len(sizes):
        raise UploadProblem(
            "VALIDATION_ERROR", f"part_sha256 must have one digest per part: {len(sizes)}"
        )
    now = utcnow()
    upload = DirectUpload(
        id=secrets.token_hex(16),
        owner_id=declared.owner_id,
        original_name=declared.original_name,
        extension=declared.extension,
        size=declared.size,
        sha256=declared.sha256,
        part_size=part_size,
        part_count=len(sizes),
        tags=declared.tags,
        category=declared.category,
        state=UploadState.OPEN,
        created_at=now,
        expires_at=now + timedelta(seconds=settings.upload_ttl),
    )
    digests = declared.part_sha256 or [None] * len(sizes)
    with pipeline.db.session() as session:
        session.add(upload)
        session.flush()
        session.execute(  # one multi-row INSERT, not an object a part
            insert(UploadPart),
            [
                {"upload_id": upload.id, "part_number": n, "size": size, "sha256": digest}
                for n, (size, digest) in enumerate(zip(sizes, digests, strict=True), start=1)
            ],
        )
        # Last: the account's row is held from here to the commit (common.files.usage).
        usage.admit(session, declared.owner_id, declared.size, settings.user_quota_mb)
    if pipeline.storage.multipart:
        try:
            store_id = pipeline.storage.start_multipart(
                direct_key(upload.id), KINDS[upload.extension].canonical_type
            )
        except StorageError:
            _close([upload.id], pipeline)  # nothing signed: the reservation goes back
            raise
        with pipeline.db.session() as session:
            session.execute(
                update(DirectUpload)
                .where(DirectUpload.id == upload.id)
                .values(store_upload_id=store_id)
            )
        upload.store_upload_id = store_id
    return upload


def upload_of(session: Session, upload_id: str, owner_id: int | None) -> DirectUpload | None:
    """The upload ``upload_id`` of ``owner_id`` (None: anyone's, for admins)."""
    query = select(DirectUpload).where(DirectUpload.id == upload_id)
    if owner_id is not None:
        query = query.where(DirectUpload.owner_id == owner_id)
    return session.scalars(query).first()


@dataclass(frozen=True)
class Part:
    """One line of the ledger (read with plain rows: an upload may have 10,000 parts)."""

    upload_id: str
    part_number: int
    size: int
    sha256: str | None
    etag: str | None
    received_at: datetime | None


_PART_COLUMNS = (
    UploadPart.upload_id,
    UploadPart.part_number,
    UploadPart.size,
    UploadPart.sha256,
    UploadPart.etag,
    UploadPart.received_at,
)


def ledger(session: Session, upload_id: str) -> list[Part]:
    query = select(*_PART_COLUMNS).where(UploadPart.upload_id == upload_id)
    return [Part(*row) for row in session.execute(query.order_by(UploadPart.part_number))]


def current_ledger(pipeline: Pipeline, upload: DirectUpload) -> list[Part]:
    """The ledger, brought up to date with the store's ListParts first on S3 (parts go to the
    store straight from the client; the service learns of them there). An upload recorded but
    not yet opened in the store (``do_create_upload`` between its two commits, or stopped
    there) has nothing in the store to ask: its ledger is the answer."""
    opened = upload.store_upload_id is not None
    if pipeline.storage.multipart and upload.state == UploadState.OPEN and opened:
        synced = _synced(pipeline, upload)
        if synced is not None:
            return synced
    with pipeline.db.reading() as session:
        return ledger(session, upload.id)


def _synced(pipeline: Pipeline, upload: DirectUpload) -> list[Part] | None:
    """The ledger with what the store holds recorded (one UPDATE for all the parts that
    changed); None when the store no longer has the upload (completed or aborted meanwhile)."""
    try:
        held = pipeline.storage.list_parts(direct_key(upload.id), upload.store_upload_id)
    except FileNotFoundError:
        return None
    now, parts, changes = utcnow(), [], []
    with pipeline.db.session() as session:
        for part in ledger(session, upload.id):
            size, etag = held.get(part.part_number, (None, None))
            if size == part.size and part.etag != etag:
                part = replace(part, etag=etag, received_at=now)
            elif size != part.size and part.received_at is not None:
                log.warning(
                    "upload %s: part %s is gone from the store", upload.id, part.part_number
                )
                part = replace(part, etag=None, received_at=None)
            else:
                parts.append(part)
                continue
            parts.append(part)
            changes.append(
                {"id": upload.id, "n": part.part_number, "etag": part.etag, "at": part.received_at}
            )
        if changes:
            table = UploadPart.__table__
            session.execute(
                table.update()
                .where(table.c.upload_id == bindparam("id"), table.c.part_number == bindparam("n"))
                .values(etag=bindparam("etag"), received_at=bindparam("at")),
                changes,
            )
    return parts


@dataclass(frozen=True)
class PartUrl:
    """Where to PUT one part, with the headers to send (the signature covers them)."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)


def part_url(pipeline: Pipeline, upload: DirectUpload, part: Part, base_url: str) -> PartUrl:
    """A signed URL to PUT ``part`` to: the store's own on S3, else the API's."""
    if pipeline.storage.multipart:
        url, headers = pipeline.storage.sign_part(
            direct_key(upload.id),
            upload.store_upload_id,
            part.part_number,
            part.size,
            part.sha256,
            PART_URL_TTL,
        )
        return PartUrl(url, headers)
    return PartUrl(_api_part_url(pipeline, part, base_url), {"Content-Length": str(part.size)})


# -- part URLs served by the API (the filesystem store) -----------------------------------------


def _signature(
    secret: str, upload_id: str, number: int, size: int, sha256: str | None, expires: int
):
    message = f"{upload_id}:{number}:{size}:{sha256 or ''}:{expires}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def _api_part_url(pipeline: Pipeline, part: Part, base_url: str) -> str:
    """A signed URL to PUT ``part`` to, valid for PART_URL_TTL seconds."""
    expires = int(time.time()) + PART_URL_TTL
    secret = pipeline.settings.resolved_secret_key()
    signature = _signature(
        secret, part.upload_id, part.part_number, part.size, part.sha256, expires
    )
    path = f"/api/v2/uploads/{part.upload_id}/parts/{part.part_number}"
    return f"{base_url.rstrip('/')}{path}?expires={expires}&signature={signature}"


def _part_path(pipeline: Pipeline, upload_id: str, number: int) -> Path:
    return Path(pipeline.settings.staging_dir) / "uploads" / upload_id / f"{number:05d}"


def do_receive_part(
    pipeline: Pipeline,
    upload_id: str,
    number: int,
    expires: str,
    signature: str,
    stream: BinaryIO,
    length: int | None,
) -> str:
    """Write a part PUT to its signed URL straight to disk and record it in the ledger: its
    ETag. ``UploadProblem``: a URL that is not valid for this part, a body of another length
    than the part's, bytes whose sha256 is not the declared one, an upload no longer open."""
    with pipeline.db.reading() as session:
        upload = upload_of(session, upload_id, None)
        part = session.get(UploadPart, (upload_id, number)) if upload is not None else None
    secret = pipeline.settings.resolved_secret_key()
    valid = (
        part is not None
        and expires.isdigit()
        and int(expires) >= time.time()
        and hmac.compare_digest(
            _signature(secret, upload_id, number, part.size, part.sha256, int(expires)),
            signature,
        )
    )
    if not valid:
        raise UploadProblem("INVALID_SIGNATURE", "the URL is not valid for this part, or expired")
    if upload.state != UploadState.OPEN:
        raise UploadProblem("UPLOAD_CLOSED", f"the upload is {upload.state.value}")
    if length != part.size:
        raise UploadProblem(
            "PART_SIZE_MISMATCH", f"part {number} is {part.size} bytes", expected=part.size
        )
    path = _part_path(pipeline, upload_id, number)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    digest, written = hashlib.sha256(), 0
    try:
        with open(partial, "wb") as out:
            while written < part.size:
                chunk = stream.read(min(CHUNK, part.size - written))
                if not chunk:
                    break
                out.write(chunk)
                digest.update(chunk)
                written += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        if written != part.size:
            raise UploadProblem(
                "PART_SIZE_MISMATCH", f"part {number} is {part.size} bytes", expected=part.size
            )
        sha256 = digest.hexdigest()
        if part.sha256 is not None and sha256 != part.sha256:
            raise UploadProblem("CHECKSUM_MISMATCH", f"part {number}'s bytes are not its sha256")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    etag = f'"{sha256}"'
    with pipeline.db.session() as session:
        session.execute(
            update(UploadPart)
            .where(UploadPart.upload_id == upload_id, UploadPart.part_number == number)
            .values(sha256=sha256, etag=etag, received_at=utcnow())
        )
    return etag


# -- complete and abort -------------------------------------------------------------------------


def do_complete_upload(pipeline: Pipeline, upload: DirectUpload) -> File:
    """The upload's file (idempotent: the same file however often it is asked). Its parts are
    assembled into a staged file and accepted as any upload; ``UploadProblem`` when parts are
    missing (``missing``: their numbers) or the upload was aborted."""
    if upload.state == UploadState.COMPLETED:
        return _file_of(pipeline, upload)
    if upload.state == UploadState.ABORTED:
        raise UploadProblem("UPLOAD_CLOSED", "the upload was aborted")
    parts = current_ledger(pipeline, upload)
    missing = [p.part_number for p in parts if p.received_at is None]
    if missing:
        raise UploadProblem("PARTS_MISSING", f"parts not received: {missing[:20]}", missing=missing)
    if pipeline.storage.multipart:
        return _complete_in_store(pipeline, upload, parts)
    try:
        staged = _assemble(pipeline, upload, parts)
    except FileNotFoundError:  # a racing complete finished first and removed the parts
        with pipeline.db.reading() as session:
            now = session.get(DirectUpload, upload.id)
        if now.state == UploadState.COMPLETED:
            return _file_of(pipeline, now)
        raise UploadProblem("UPLOAD_CLOSED", f"the upload is {now.state.value}") from None
    declared_wrong = upload.sha256 is not None and staged.sha256 != upload.sha256

    def close(session: Session, file: File) -> bool:
        closed = _closed(session, upload, file)
        if closed and declared_wrong:
            states.transition(
                session,
                file.id,
                FileStatus.REJECTED,
                error="the file's sha256 is not the one declared",
            )
            outbox.done(session, file.id, OutboxKind.INGEST)
        return closed

    file = _accepted(pipeline, upload, staged, close)
    _remove_parts(pipeline, upload.id)
    if declared_wrong:
        remove_staged(staged.path)
    return file


def _complete_in_store(pipeline: Pipeline, upload: DirectUpload, parts: list[Part]) -> File:
    """Join the parts in the store, then record the file: its worker fetches, verifies and
    copies the joined object (``Ingest``)."""
    key = direct_key(upload.id)
    try:
        pipeline.storage.finish_multipart(
            key, upload.store_upload_id, [p.etag for p in parts], upload.size
        )
    except FileNotFoundError:  # joined already by a racing complete, or aborted
        with pipeline.db.reading() as session:
            now = session.get(DirectUpload, upload.id)
        if now.state == UploadState.COMPLETED:
            return _file_of(pipeline, now)
        if now.state == UploadState.ABORTED:
            raise UploadProblem("UPLOAD_CLOSED", "the upload was aborted") from None
        pipeline.storage.head(key)  # joined: the conditional close below picks one file
    staged = StagedUpload(
        path=None,  # in the store
        name=generate_name(upload.extension, datetime.now(UTC)),
        original_name=upload.original_name,
        extension=upload.extension,
        size=upload.size,
        sha256=upload.sha256 or "",  # the worker fills in what it finds
        uploaded_at=datetime.now(UTC),
    )
    return _accepted(pipeline, upload, staged, lambda session, file: _closed(session, upload, file))


def _closed(session: Session, upload: DirectUpload, file: File) -> bool:
    """Mark the upload completed as ``file``, if it still is open (one complete wins)."""
    return bool(
        session.execute(
            update(DirectUpload)
            .where(DirectUpload.id == upload.id, DirectUpload.state == UploadState.OPEN)
            .values(state=UploadState.COMPLETED, file_id=file.id, finished_at=utcnow())
        ).rowcount
    )


def _accepted(pipeline: Pipeline, upload: DirectUpload, staged: StagedUpload, then) -> File:
    file = pipeline.accept(
        staged,
        owner_id=upload.owner_id,
        category=upload.category,
        tags=upload.tags,
        reserved=True,
        then=then,
    )
    if file is None:  # another complete won: its file is the answer
        with pipeline.db.reading() as session:
            upload = session.get(DirectUpload, upload.id)
        return _file_of(pipeline, upload)
    return file


def _file_of(pipeline: Pipeline, upload: DirectUpload) -> File:
    with pipeline.db.reading() as session:
        return session.get(File, upload.file_id)


def _assemble(pipeline: Pipeline, upload: DirectUpload, parts: list[Part]) -> StagedUpload:
    now = datetime.now(UTC)
    name = generate_name(upload.extension, now)
    path = staged_path(pipeline.settings.staging_dir, name)
    digest = hashlib.sha256()
    partial = path.with_name(f".{name}.assembling")
    try:
        with open(partial, "wb") as out:
            for part in parts:
                with open(_part_path(pipeline, upload.id, part.part_number), "rb") as source:
                    while chunk := source.read(CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return StagedUpload(
        path=path,
        name=name,
        original_name=upload.original_name,
        extension=upload.extension,
        size=upload.size,
        sha256=digest.hexdigest(),
        uploaded_at=now,
    )


def do_abort_upload(pipeline: Pipeline, upload: DirectUpload) -> DirectUpload:
    """Abort an open upload: its parts go, its reserved bytes are freed (idempotent; a
    completed upload is left as it is)."""
    _close([upload.id], pipeline)
    with pipeline.db.reading() as session:
        return session.get(DirectUpload, upload.id)


def _close(upload_ids: Iterable[str], pipeline: Pipeline) -> int:
    aborted = 0
    for upload_id in upload_ids:
        with pipeline.db.session() as session:
            closed = session.execute(
                update(DirectUpload)
                .where(DirectUpload.id == upload_id, DirectUpload.state == UploadState.OPEN)
                .values(state=UploadState.ABORTED, finished_at=utcnow())
                .returning(DirectUpload.owner_id, DirectUpload.size, DirectUpload.store_upload_id)
            ).first()
            if closed is not None:
                usage.release(session, closed.owner_id, closed.size)
        if closed is not None:
            aborted += 1
            _remove_parts(pipeline, upload_id)
            if closed.store_upload_id:
                try:
                    pipeline.storage.abort_multipart(direct_key(upload_id), closed.store_upload_id)
                except StorageError as exc:  # the bucket's lifecycle rule is the second guard
                    log.warning("upload %s not aborted in the store: %s", upload_id, exc)
    return aborted


def _remove_parts(pipeline: Pipeline, upload_id: str) -> None:
    shutil.rmtree(Path(pipeline.settings.staging_dir) / "uploads" / upload_id, ignore_errors=True)


def expire_uploads(pipeline: Pipeline, limit: int = 500) -> int:
    """Abort open uploads past their expiry (beat): how many."""
    with pipeline.db.reading() as session:
        due = list(
            session.scalars(
                select(DirectUpload.id)
                .where(DirectUpload.state == UploadState.OPEN, DirectUpload.expires_at < utcnow())
                .limit(limit)
            )
        )
    return _close(due, pipeline)
