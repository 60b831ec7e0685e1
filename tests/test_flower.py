"""Flower on the same broker lists the pipeline's tasks, behind basic auth."""

import io
import os
import subprocess
import sys

import requests

from tests.conftest import ROOT, eventually, free_port, settings_env, wait_for_status


def test_flower_lists_pipeline_tasks_behind_basic_auth(app, client, clean_stack, tmp_path):
    port = free_port()
    env = os.environ | settings_env(clean_stack.settings) | {"FLOWER_BASIC_AUTH": "ops:s3cret"}
    argv = [sys.executable, "-m", "celery", "-A", "worker", "flower"]
    argv += [f"--port={port}", "--address=127.0.0.1"]
    with open(tmp_path / "flower.log", "wb") as log:
        flower = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        assert eventually(lambda: _status(f"{url}/api/tasks") == 401, timeout=30)
        # Flower only sees events sent after its receiver connected, which it does not
        # announce: upload until one of the uploads shows, a few times at most.
        seen = False
        for _ in range(4):
            reply = client.post(
                "/files/upload",
                data={"file": (io.BytesIO(b"watched"), "a.txt")},
                content_type="multipart/form-data",
            )
            name = reply.get_json()["filename"]
            file = wait_for_status(clean_stack.db, name, {"stored"})
            task = f"ingest-{file.id}-0"

            def listed(task=task):
                tasks = requests.get(f"{url}/api/tasks", auth=("ops", "s3cret"), timeout=5).json()
                return tasks.get(task, {}).get("state") == "SUCCESS"

            if eventually(listed, timeout=5):
                seen = True
                break
        assert seen
        assert _status(f"{url}/api/tasks", auth=("ops", "wrong")) == 401
    finally:
        flower.terminate()
        flower.wait(15)


def _status(url, auth=None):
    try:
        return requests.get(url, auth=auth, timeout=2).status_code
    except requests.RequestException:
        return None
