"""The ``upload-pipeline`` command as a person runs it, against gunicorn and a worker: small
files in one request, large ones by the direct path; killed half-way, the same command again
sends only the parts the service does not have; a file changed since starts over; ``abort``
ends an unfinished upload."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from common.models import DirectUpload, UploadState
from tests.accounts import account
from tests.conftest import ROOT, eventually, wait_for_status

MIB = 1024 * 1024
COMMAND = str(Path(sys.executable).with_name("upload-pipeline"))


def _file(path: Path, size: int, seed: str) -> Path:
    line = f"{seed} line of a file sent by the client\n".encode()
    path.write_bytes((line * (size // len(line) + 1))[:size])
    return path


def _env(url: str, token: str, state: Path) -> dict[str, str]:
    return os.environ | {
        "UPLOAD_PIPELINE_URL": url,
        "UPLOAD_PIPELINE_TOKEN": token,
        "UPLOAD_PIPELINE_STATE": str(state),
    }


def _run(args: list[str], url: str, token: str, state: Path):
    return subprocess.run(
        [COMMAND, *args],
        env=_env(url, token, state),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _slowly(path: Path, rate: int, url: str, token: str, state: Path) -> subprocess.Popen:
    """The command uploading ``path`` at ``rate`` bytes a second a part, in the background."""
    return subprocess.Popen(
        [COMMAND, "upload", str(path), "--limit-rate", str(rate)],
        env=_env(url, token, state),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _received(db, user) -> int:
    """Parts of the account's upload the service holds, as a resuming client is told (on S3
    the service learns of them from the store)."""
    with db.session() as session:
        upload_id = session.scalar(select(DirectUpload.id))
    if upload_id is None:
        return 0
    state = user.get(f"/api/v2/uploads/{upload_id}").json()
    return sum(part["received"] for part in state["parts"])


def _settled(count) -> int:
    """``count()`` once it has not changed for a second."""
    before = count()
    while True:
        time.sleep(1)
        now = count()
        if now == before:
            return now
        before = now


def _puts(log: Path) -> Counter:
    """Parts accepted (200) by the API, by upload and part number, from its access log."""
    found = re.findall(r"PUT /api/v2/uploads/(\w+)/parts/(\d+) 200", log.read_text())
    return Counter(found)


def test_the_client_uploads_small_and_large_files(token_server, clean_stack, tmp_path):
    alice = account(token_server.url, "alice")
    small = _file(tmp_path / "small.txt", 1000, "small")
    large = _file(tmp_path / "large.txt", 20 * MIB, "large")
    done = _run(
        ["upload", str(small), str(large), "--tag", "cli"],
        token_server.url,
        alice.tokens["access_token"],
        tmp_path / "state",
    )
    assert done.returncode == 0, done.stderr
    lines = [line.split("\t") for line in done.stdout.splitlines()]
    assert [Path(path).name for path, _name, _status in lines] == ["small.txt", "large.txt"]
    for (_path, name, _status), source in zip(lines, (small, large), strict=True):
        file = wait_for_status(clean_stack.db, name, {"stored"}, timeout=60)
        assert file.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    with clean_stack.db.session() as session:
        assert session.scalar(select(DirectUpload.state)) == UploadState.COMPLETED  # the large
    assert list((tmp_path / "state").iterdir()) == []  # no checkpoint left


@pytest.mark.slow
def test_an_interrupted_upload_resumes_sending_only_the_missing_parts(
    token_server, clean_stack, tmp_path
):
    alice = account(token_server.url, "alice")
    token = alice.tokens["access_token"]
    big = _file(tmp_path / "big.txt", 40 * MIB + 123, "resumed")  # 6 parts of 8 MiB
    state = tmp_path / "state"
    slow = _slowly(big, 4 * MIB, token_server.url, token, state)
    try:
        assert eventually(lambda: _received(clean_stack.db, alice) >= 2, timeout=60)
    finally:
        os.killpg(slow.pid, signal.SIGKILL)  # as a crash: no goodbye
        slow.communicate()
    # A part whose last byte left before the kill is still being written: let it land.
    sent_before = _settled(lambda: _received(clean_stack.db, alice))
    assert 2 <= sent_before < 6
    again = _run(["upload", str(big)], token_server.url, token, state)
    assert again.returncode == 0, again.stderr
    assert f"{sent_before} of 6 parts are there" in again.stderr
    name = again.stdout.split("\t")[1]
    file = wait_for_status(clean_stack.db, name, {"stored"}, timeout=60)
    assert file.sha256 == hashlib.sha256(big.read_bytes()).hexdigest()
    if clean_stack.settings.storage_backend == "s3":
        return  # the parts went to the store: the API's log below sees only the filesystem's
    with clean_stack.db.session() as session:
        upload_id = session.scalar(select(DirectUpload.id).where(DirectUpload.file_id == file.id))
    accepted = {
        part: n for (upload, part), n in _puts(token_server.log).items() if upload == upload_id
    }
    assert len(accepted) == 6 and set(accepted.values()) == {1}  # never a part sent twice


def test_a_changed_file_starts_over_and_abort_ends_an_upload(token_server, clean_stack, tmp_path):
    alice = account(token_server.url, "alice")
    token = alice.tokens["access_token"]
    big = _file(tmp_path / "big.txt", 17 * MIB, "first version")
    state = tmp_path / "state"
    slow = _slowly(big, 2 * MIB, token_server.url, token, state)
    try:
        assert eventually(lambda: list(state.glob("*.json")), timeout=30)  # checkpointed
    finally:
        slow.send_signal(signal.SIGINT)  # Ctrl-C: stops, does not abort
        _, err = slow.communicate(timeout=30)
    assert slow.returncode == 130, err
    with clean_stack.db.session() as session:
        assert session.scalar(select(DirectUpload.state)) == UploadState.OPEN
    _file(big, 17 * MIB, "second version")
    again = _run(["upload", str(big)], token_server.url, token, state)
    assert again.returncode == 0 and "changed since its upload began" in again.stderr
    file = wait_for_status(clean_stack.db, again.stdout.split("\t")[1], {"stored"}, timeout=60)
    assert file.sha256 == hashlib.sha256(big.read_bytes()).hexdigest()
    with clean_stack.db.session() as session:
        states = sorted(s.value for s in session.scalars(select(DirectUpload.state)))
    assert states == ["aborted", "completed"]  # the first one ended, not left to expire
    # abort: an unfinished upload ended by the command.
    other = _file(tmp_path / "other.txt", 17 * MIB, "never finished")
    slow = _slowly(other, MIB, token_server.url, token, state)
    try:
        assert eventually(lambda: list(state.glob("*.json")), timeout=30)
    finally:
        os.killpg(slow.pid, signal.SIGKILL)
        slow.communicate()
    aborted = _run(["abort", str(other)], token_server.url, token, state)
    assert aborted.returncode == 0 and "aborted" in aborted.stderr
    assert list(state.glob("*.json")) == []
    with clean_stack.db.session() as session:
        assert (
            session.scalar(select(func.count()).where(DirectUpload.state == UploadState.OPEN)) == 0
        )
