"""Ingest: claim a staged file under a lease, verify its bytes, push them, settle the result.

Whoever loses a race (a redelivery, two workers, a delete, a give-up) settles what it finds;
docs/ARCHITECTURE.md ("Claims and leases") tells the whole story.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from common import outbox
from common.fileinfo import file_metadata
from common.models import OPEN_STATES, File, FileStatus, OutboxKind, db_now, utcnow
from common.pipeline.base import Stage
from common.staging import remove_staged, staged_path
from common.states import free_for, lease_lapsed, sources, transition
from common.storage import (
    PutRequest,
    StorageError,
    StorageIntegrityError,
    StorageRefused,
    ascii_metadata,
)

log = logging.getLogger(__name__)

#: Final for ingest: nothing left for an ingest task to do.
FINISHED = (FileStatus.DELETED, FileStatus.REJECTED, FileStatus.STORED)


@dataclass(frozen=True)
class Claimed:
    """A file this delivery holds under ``claim``, as it was when claimed."""

    file: File
    claim: str


class Ingest(Stage):
    def ingest(self, file_id: int) -> FileStatus | None:
        """Verify a staged file and push it to the store; returns the file's status after.

        The delivery first claims the file with a lease that it renews while it works; a
        delivery that finds a live claim of another leaves the file to it (a dead holder's
        lease lapses and the reconciler hands the file out again). Raises
        ``StorageUnavailable``, ``StorageIntegrityError`` and database errors for the task to
        retry, after releasing the claim.
        """
        taken = self.take(file_id)
        return self.work(taken) if isinstance(taken, Claimed) else taken

    def take(self, file_id: int) -> Claimed | FileStatus | None:
        """The first step of ``ingest``: claim the file for this delivery, or settle what
        another one finished (its status then; None when there is no such file)."""
        claim = _new_claim()
        file = self._claim(file_id, claim)
        if file is None:
            return None
        if file.claim != claim:
            if file.status not in OPEN_STATES:
                return self._settle(file)
            log.info("file %s is being processed under claim %s", file_id, file.claim)
            return file.status
        return Claimed(file, claim)

    def work(self, taken: Claimed) -> FileStatus:
        """The second step of ``ingest``: verify and push a claimed file, renewing the lease."""
        file, claim = taken.file, taken.claim
        try:
            with self._renewing(file.id, claim):
                try:
                    return self._verify_and_push(file, claim)
                except FileNotFoundError:  # the staged copy vanished: another delivery finished
                    return self._recover_missing_stage(file, claim)
                except StorageRefused as exc:  # no retry will change it: failed at once
                    refused = f"Хранилище отказало: {exc}"
                    return self._finish(file, FileStatus.FAILED, claim, error=refused)
        except (StorageError, StorageIntegrityError, DBAPIError):
            # The task retries: give the file back for it. Anything else (a bug, the soft
            # time limit) leaves the claim to lapse; the reconciler then hands the file out
            # again, at most OUTBOX_MAX_PUBLISHES times.
            self._release(file.id, claim)
            raise

    def _claim(self, file_id: int, claim: str) -> File | None:
        """Take the file for this delivery (pending, lapsed, or held by a dead process of
        this host) and load it; a file held by someone else is loaded as it is."""
        with self.db.session() as session:
            lease = self.settings.claim_lease
            file = session.scalars(_claiming(file_id, claim, free_for(None), lease)).one_or_none()
            if file is None:
                file = session.get(File, file_id)
                if file is not None and _holder_is_dead(file):
                    taken = _claiming(file_id, claim, File.claim == file.claim, lease)
                    file = session.scalars(taken).one_or_none() or file
        return file

    @contextmanager
    def _renewing(self, file_id: int, claim: str) -> Iterator[None]:
        """Renew the claim's lease every third of CLAIM_LEASE while the body runs."""
        lease = self.settings.claim_lease
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(lease / 3):
                try:
                    with self.db.session() as session:
                        session.execute(
                            update(File)
                            .where(File.id == file_id, File.claim == claim)
                            .values(lease_until=db_now(lease))
                        )
                except Exception as exc:  # the lease lapses; the reconciler takes over
                    log.warning("could not renew the claim on file %s: %s", file_id, exc)

        thread = threading.Thread(target=renew, daemon=True, name=f"lease-{file_id}")
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)

    def _release(self, file_id: int, claim: str) -> None:
        """Give the file back (pending) so that a retry or another delivery can claim it."""
        try:
            with self.db.session() as session:
                transition(
                    session,
                    file_id,
                    FileStatus.PENDING,
                    File.claim == claim,
                    claim=None,
                    lease_until=None,
                )
        except Exception as exc:  # the lease lapses instead
            log.warning("could not release the claim on file %s: %s", file_id, exc)

    def _verify_and_push(self, file: File, claim: str) -> FileStatus:
        from common.sniff import check_content  # libmagic and Pillow: loaded by workers only

        path = staged_path(self.settings.staging_dir, file.name)
        verdict = check_content(
            path, file.extension, max_image_pixels=self.settings.max_image_pixels
        )
        if not verdict.ok:
            return self._finish(
                file,
                FileStatus.REJECTED,
                claim,
                error=verdict.reason,
                content_type=verdict.detected,
            )
        sha256, md5 = _digests(path)
        if sha256 != file.sha256:
            return self._finish(
                file, FileStatus.FAILED, claim, error="Промежуточная копия файла повреждена"
            )
        info = self.storage.put(
            PutRequest(
                key=file.name,
                path=path,
                content_type=_served_type(file.content_type),
                original_name=file.original_name,
                md5_hex=md5,
                metadata=ascii_metadata(file_metadata(file) | {"sha256": sha256}),
            )
        )
        return self._finish(
            file, FileStatus.STORED, claim, md5=md5, etag=info.etag, stored_at=info.last_modified
        )

    def fail(self, file_id: int, reason: str) -> None:
        """After the last retry the file ends ``failed`` with the reason; its bytes stay staged.

        A file that another delivery holds under a live claim is left to it.
        """
        with self.db.session() as session:
            give_up(session, file_id, reason)

    def _finish(self, file: File, status: FileStatus, claim: str, **values) -> FileStatus:
        """Move a file to its final state; whoever loses the race settles what it found.

        A verified push wins over anything but a delete (also over a give-up that happened
        while it pushed: the object is there); a failure never overrides a live claim of
        another delivery.
        """
        guard = free_for(claim) if status == FileStatus.FAILED else None
        with self.db.session() as session:
            released = {"claim": None, "lease_until": None}
            won = transition(session, file.id, status, guard, **released, **values)
            if won and status == FileStatus.STORED:
                outbox.hand_over(session, file.id, OutboxKind.INGEST, OutboxKind.METADATA)
            elif won:
                outbox.done(session, file.id, OutboxKind.INGEST)
            current = None if won else session.get(File, file.id)
        if not won:
            return self._settle(current)
        if status != FileStatus.FAILED:
            remove_staged(staged_path(self.settings.staging_dir, file.name))
        if status == FileStatus.STORED:
            self.publish(file.id, OutboxKind.METADATA)
        return status

    def _settle(self, file: File) -> FileStatus:
        """Bookkeeping for a file some other delivery already finished (or that was deleted).

        A file still open (another delivery took it over after this one's lease lapsed) keeps
        its ingest entry: that delivery may die too, and the entry is what brings it back.
        """
        if file.status == FileStatus.DELETED:
            self.storage.delete(file.name)  # a push that raced the delete leaves no object
        if file.status in FINISHED:
            remove_staged(staged_path(self.settings.staging_dir, file.name))
            self._drop(file.id, OutboxKind.INGEST)
        return file.status

    def _recover_missing_stage(self, file: File, claim: str) -> FileStatus:
        """No staged bytes: an earlier delivery may have pushed them; the store's copy decides."""
        with self.db.session() as session:
            current = session.get(File, file.id)
        if current.status not in OPEN_STATES:
            return self._settle(current)
        try:
            info = self.storage.head(file.name)
        except FileNotFoundError:
            info = None
        if info is None or info.metadata.get("sha256") != file.sha256:
            lost = "Промежуточная копия файла утеряна"
            return self._finish(file, FileStatus.FAILED, claim, error=lost)
        return self._finish(
            file,
            FileStatus.STORED,
            claim,
            etag=info.etag,
            stored_at=info.last_modified,
            md5=info.etag,
        )

    def keep_alive(self, file_id: int, kind: OutboxKind) -> None:
        """A task is retrying: its outbox entry is not stale."""
        with self.db.session() as session:
            outbox.touch(session, file_id, kind)


def give_up(session: Session, file_id: int, reason: str) -> bool:
    """End an unfinished file ``failed`` with ``reason`` and drop its ingest entry, in the
    caller's transaction; False (entry kept) while another delivery holds a live claim."""
    if transition(session, file_id, FileStatus.FAILED, free_for(None), error=reason):
        outbox.done(session, file_id, OutboxKind.INGEST)
        return True
    status = session.scalar(select(File.status).where(File.id == file_id))
    if status not in OPEN_STATES:  # finished (or gone) meanwhile: nothing left to give up
        outbox.done(session, file_id, OutboxKind.INGEST)
    return False


def reclaim_lapsed(session: Session, limit: int, *, skip_locked: bool) -> list[int]:
    """Take back ``processing`` files whose claim lapsed (their worker died): they become
    ``pending`` and their ingest entries due for publishing at once."""
    query = select(File.id).where(File.status == FileStatus.PROCESSING, lease_lapsed()).limit(limit)
    if skip_locked:
        query = query.with_for_update(skip_locked=True)
    ids = list(session.scalars(query))
    if ids:
        session.execute(
            update(File)
            .where(File.id.in_(ids), File.status == FileStatus.PROCESSING, lease_lapsed())
            .values(status=FileStatus.PENDING, claim=None, lease_until=None, updated_at=utcnow())
        )
        outbox.make_due(session, ids, OutboxKind.INGEST)
    return ids


def _new_claim() -> str:
    """A claim names its holder (host and process) and is unique to one delivery."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{secrets.token_hex(6)}"


def _holder_is_dead(file: File) -> bool:
    """The file is claimed by a process of this host that no longer runs (a pool process
    killed mid-task, whose task came straight back): no need to wait for its lease."""
    if file.status != FileStatus.PROCESSING or not file.claim:
        return False
    host, _, rest = file.claim.rpartition(":")[0].rpartition(":")
    if host != socket.gethostname()[:80] or not rest.isdigit() or int(rest) == os.getpid():
        return False
    try:
        os.kill(int(rest), 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    return False


def _claiming(file_id: int, claim: str, condition: ColumnElement[bool], lease: int):
    """The UPDATE that claims a file under ``condition`` and returns it."""
    return (
        update(File)
        .where(File.id == file_id, File.status.in_(sources(FileStatus.PROCESSING)), condition)
        .values(
            status=FileStatus.PROCESSING,
            attempts=File.attempts + 1,
            claim=claim,
            lease_until=db_now(lease),
            updated_at=utcnow(),
        )
        .returning(File)
    )


def _digests(path: Path) -> tuple[str, str]:
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(1024 * 1024):
            sha256.update(chunk)
            md5.update(chunk)
    return sha256.hexdigest(), md5.hexdigest()


def _served_type(content_type: str) -> str:
    return "text/plain; charset=utf-8" if content_type == "text/plain" else content_type
