"""``upload-pipeline``: upload files with a progress bar each, resuming after an interruption.

    upload-pipeline upload FILE... [--tag T]... [--category C]
    upload-pipeline abort FILE...

The service is ``--url`` (UPLOAD_PIPELINE_URL, default http://127.0.0.1:5000), the credential
``--token`` (UPLOAD_PIPELINE_TOKEN: an access token or an API key with ``files:write``).
Ctrl-C stops without aborting: the same command again goes on from the parts the service has.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from client.transfer import Client, UploadFailed, default_state_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="upload-pipeline", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--url", default=os.environ.get("UPLOAD_PIPELINE_URL", "http://127.0.0.1:5000")
    )
    parser.add_argument("--token", default=os.environ.get("UPLOAD_PIPELINE_TOKEN"))
    parser.add_argument("--state-dir", type=Path, default=default_state_dir())
    commands = parser.add_subparsers(dest="command", required=True)
    upload = commands.add_parser("upload", help="upload files (resuming where they stopped)")
    upload.add_argument("files", nargs="+", type=Path)
    upload.add_argument("--tag", action="append", default=[], dest="tags")
    upload.add_argument("--category")
    upload.add_argument("--limit-rate", type=int, default=0, help="bytes a second per part")
    abort = commands.add_parser("abort", help="abort the unfinished uploads of files")
    abort.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    if not args.token:
        console.print("error: no credential: set UPLOAD_PIPELINE_TOKEN or pass --token")
        return 2
    client = Client(
        args.url,
        args.token,
        args.state_dir,
        limit_rate=getattr(args, "limit_rate", 0),
        say=console.print,
    )
    try:
        if args.command == "abort":
            for path in args.files:
                found = client.abort(path)
                console.print(f"{path}: {'aborted' if found else 'no unfinished upload'}")
            return 0
        return _upload(client, args, console)
    except KeyboardInterrupt:
        console.print("interrupted: run the same command again to go on where it stopped")
        return 130
    except UploadFailed as exc:
        console.print(f"error: {exc}")
        return 1


def _upload(client: Client, args, console: Console) -> int:
    missing = [str(p) for p in args.files if not p.is_file()]
    if missing:
        console.print(f"error: not a file: {', '.join(missing)}")
        return 2
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as progress:
        for path in args.files:
            task = progress.add_task(path.name, total=path.stat().st_size)
            file = client.upload(
                path,
                tags=args.tags,
                category=args.category,
                progress=lambda n, task=task: progress.advance(task, n),
            )
            print(f"{path}\t{file['name']}\t{file['status']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
