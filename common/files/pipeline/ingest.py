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

from sqlalchemy import ColumnElement, and_, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from common.fileinfo import file_metadata
from common.files import outbox
from common.files.pipeline.base import Stage
from common.files.states import free_for, lease_lapsed, transition
from common.models import OPEN_STATES, Failure, File, FileStatus, OutboxKind, db_now
from common.staging import remove_staged, staged_path
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
#: How many S3_READ_TIMEOUTs after a delete a push given up on may still land: the object of a
#: file deleted meanwhile is removed again then (``Ingest.remove_again_later``).
STRAGGLER_GRACE = 2


@dataclass(frozen=True)
class Claimed:
    """A file this delivery holds under ``claim``, as it was when claimed."""

    file: File
    claim: str
    #: A direct upload's object in the store (``uploads/<id>``), looked up with the claim.
    source: str | None = None


class Ingest(Stage):
    def ingest(self, file_id: int, *, retried: bool = False) -> FileStatus | None:
        """Verify a staged file and push it to the store; returns the file's status after.

        The delivery first claims the file with a lease that it renews while it works; a
        delivery that finds a live claim of another leaves the file to it (a dead holder's
        lease lapses and the reconciler hands the file out again). Raises
        ``StorageUnavailable``, ``StorageIntegrityError`` and database errors for the task to
        retry, after releasing the claim. ``retried``: an earlier attempt of this delivery
        failed (perhaps with a push given up on: see ``remove_again_later``).
        """
        taken = self.take(file_id)
        status = self.work(taken) if isinstance(taken, Claimed) else taken
        if retried and status == FileStatus.DELETED:
            self.remove_again_later(file_id)
        return status

    def remove_again_later(self, file_id: int) -> None:
        """The file was deleted while a push of it had been given up on (the store silent for
        S3_READ_TIMEOUT). The store, or a proxy in front of it that had the body already, may
        still complete that request after the delete removed the object: the object is removed
        once more, ``STRAGGLER_GRACE`` x S3_READ_TIMEOUT later (a DELETE entry due then)."""
        seconds = STRAGGLER_GRACE * self.settings.s3_read_timeout
        with self.db.session() as session:
            outbox.add_later(session, file_id, OutboxKind.DELETE, seconds)

    def take(self, file_id: int) -> Claimed | FileStatus | None:
        """The first step of ``ingest``: claim the file for this delivery, or settle what
        another one finished (its status then; None when there is no such file)."""
        claim = _new_claim()
        claimed = self._claim(file_id, claim)
        if claimed is None:
            return None
        file, source = claimed
        if file.claim != claim:
            if file.status not in OPEN_STATES:
                return self._settle(file)
            log.info("file %s is being processed under claim %s", file_id, file.claim)
            return file.status
        return Claimed(file, claim, source)

    def work(self, taken: Claimed) -> FileStatus:
        """The second step of ``ingest``: verify and push a claimed file, renewing the lease."""
        file, claim = taken.file, taken.claim
        try:
            with self._renewing(file.id, claim):
                try:
                    return self._verify_and_push(file, claim, taken.source)
                except FileNotFoundError:  # the staged copy vanished: another delivery finished
                    return self._recover_missing_stage(file, claim)
                except StorageRefused as exc:  # no retry will change it: failed at once
                    return self._fail(file, claim, Failure.REFUSED, exc)
        except (StorageError, StorageIntegrityError, DBAPIError):
            # The task retries: give the file back for it. Anything else (a bug, the soft
            # time limit) leaves the claim to lapse; the reconciler then hands the file out
            # again, at most OUTBOX_MAX_PUBLISHES times.
            self._release(file.id, claim)
            raise

    def _claim(self, file_id: int, claim: str) -> tuple[File, str | None] | None:
        """Take the file for this delivery (pending, lapsed, or held by a dead process of
        this host) and load it, with its direct upload's object when it came so (asked in the
        claim's transaction: no session of its own on the hot path); a file held by someone
        else is loaded as it is."""
        with self.db.session() as session:
            lease = self.settings.claim_lease
            claimed = self._claiming(session, file_id, claim, free_for(None), lease)
            if claimed is None:
                file = session.get(File, file_id)
                if file is not None and _holder_is_dead(file):
                    held = File.claim == file.claim
                    claimed = self._claiming(session, file_id, claim, held, lease)
                if claimed is None:
                    return (file, None) if file is not None else None
        return claimed

    def _claiming(
        self, session: Session, file_id: int, claim: str, condition: ColumnElement[bool], lease: int
    ) -> tuple[File, str | None] | None:
        """Claim a file under ``condition`` and load it as claimed, with its direct upload's
        object in the store when it came so (one SELECT for both); None when it was not
        free."""
        values = {"attempts": File.attempts + 1, "claim": claim, "lease_until": db_now(lease)}
        if not transition(session, file_id, FileStatus.PROCESSING, condition, **values):
            return None
        return self.load_with_source(session, file_id)

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

    def _verify_and_push(self, file: File, claim: str, source: str | None) -> FileStatus:
        from common.sniff import check_content  # libmagic and Pillow: loaded by workers only

        path = staged_path(self.settings.staging_dir, file.name)
        if source is not None and not path.exists():
            self._fetch(source, path)
        size = path.stat().st_size if source is not None else file.size
        if size != file.size:
            reason = f"the file is {size} bytes, not the {file.size} declared"
            return self._finish(file, FileStatus.REJECTED, claim, source, error=reason)
        verdict = check_content(
            path, file.extension, max_image_pixels=self.settings.max_image_pixels
        )
        if not verdict.ok:
            return self._finish(
                file,
                FileStatus.REJECTED,
                claim,
                source,
                error=verdict.reason,
                content_type=verdict.detected,
            )
        sha256, md5 = _digests(path)
        if source is not None and file.sha256 not in ("", sha256):
            reason = "the file's sha256 is not the one declared"
            return self._finish(file, FileStatus.REJECTED, claim, source, error=reason)
        if source is None and sha256 != file.sha256:
            return self._fail(file, claim, Failure.DAMAGED)
        request = PutRequest(
            key=file.name,
            path=path,
            content_type=_served_type(file.content_type),
            original_name=file.original_name,
            md5_hex=md5,
            metadata=ascii_metadata(file_metadata(file) | {"sha256": sha256}),
        )
        info = self._copied(source, request, file.size) if source else self.storage.put(request)
        return self._finish(
            file,
            FileStatus.STORED,
            claim,
            source,
            md5=md5,
            sha256=sha256,
            etag=info.etag,
            stored_at=info.last_modified,
        )

    def _fetch(self, source: str, path: Path) -> None:
        """The joined object's bytes, streamed into the staged file and verified here exactly as
        an upload through the API; the object itself is then copied inside the store. One GET
        serves the sniff and the sha256 both (a ranged GET of the first bytes would add a
        request, and the image and PDF checks read past them); it needs the file's size in
        STAGING_DIR for as long as the file is verified."""
        partial = path.with_name(f".{path.name}.fetching")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.storage.download(source, partial)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)

    def _copied(self, source: str, request: PutRequest, size: int):
        try:
            return self.storage.copy(source, request, size)
        except FileNotFoundError:  # gone since it was fetched: the verified bytes are here
            return self.storage.put(request)

    def fail(self, file_id: int, failure: Failure, detail: object = "") -> None:
        """After the last retry the file ends ``failed`` for ``failure``; its bytes stay staged.

        A file that another delivery holds under a live claim is left to it.
        """
        with self.db.session() as session:
            gave_up = give_up(session, file_id, failure, detail)
            file = None if gave_up else session.get(File, file_id)
            deleted = file is not None and file.status == FileStatus.DELETED
        if deleted:  # meanwhile; the attempts that failed may have left a push behind
            self.remove_again_later(file_id)

    def _fail(self, file: File, claim: str, failure: Failure, detail: object = "") -> FileStatus:
        return self._finish(
            file, FileStatus.FAILED, claim, failure=failure, error=failure.describe(detail)
        )

    def _finish(
        self, file: File, status: FileStatus, claim: str, source: str | None = None, **values
    ) -> FileStatus:
        """Move a file to its final state; whoever loses the race settles what it found.
        ``source``: a direct upload's object in the store, removed once the file is settled
        (its bytes are then stored under the file's name, or refused; a failed file keeps
        them staged, as any).

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
        self.drop_source(source)
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
            self.drop_source(self.direct_source(file.id))
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
        # A direct upload declared without a sha256 has none recorded until it is stored.
        found = info.metadata.get("sha256") if info is not None else None
        if found is None or file.sha256 not in ("", found):
            return self._fail(file, claim, Failure.LOST)
        return self._finish(
            file,
            FileStatus.STORED,
            claim,
            etag=info.etag,
            stored_at=info.last_modified,
            md5=info.etag,
            sha256=found,
        )

    def keep_alive(self, file_id: int, kind: OutboxKind) -> None:
        """A task is retrying: its outbox entry is not stale."""
        with self.db.session() as session:
            outbox.touch(session, file_id, kind)


def give_up(session: Session, file_id: int, failure: Failure, detail: object = "") -> bool:
    """End an unfinished file ``failed`` for ``failure`` and drop its ingest entry, in the
    caller's transaction; False (entry kept) while another delivery holds a live claim."""
    reason = failure.describe(detail)
    if transition(
        session, file_id, FileStatus.FAILED, free_for(None), failure=failure, error=reason
    ):
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
    lapsed = list(session.scalars(query))
    guard = and_(File.status == FileStatus.PROCESSING, lease_lapsed())
    ids = transition(session, lapsed, FileStatus.PENDING, guard, claim=None, lease_until=None)
    if ids:
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


def _digests(path: Path) -> tuple[str, str]:
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(1024 * 1024):
            sha256.update(chunk)
            md5.update(chunk)
    return sha256.hexdigest(), md5.hexdigest()


def _served_type(content_type: str) -> str:
    return "text/plain; charset=utf-8" if content_type == "text/plain" else content_type
