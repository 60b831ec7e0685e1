"""Clients of the live status as programs use them: an SSE stream read line by line over HTTP
(http.client), and a WebSocket (the websockets library's client); each hands over what arrives,
in order, with a timeout."""

from __future__ import annotations

import contextlib
import http.client
import json
import queue
import socket
import threading
from typing import Any
from urllib.parse import urlsplit

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect


class SseClient:
    """``GET events_url`` read in a thread of its own; ``next()`` gives each event's data
    (a dict) with ``_id`` the SSE id; ``status``, ``headers`` and ``json()`` once answered."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        parts = urlsplit(url)
        self.events: queue.Queue = queue.Queue()
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        self.connection.request(
            "GET", target, headers={"Accept": "text/event-stream"} | (headers or {})
        )
        self.response = self.connection.getresponse()
        self.status = self.response.status
        self.headers = self.response.headers  # case-insensitive
        if self.status != 200:
            self.body = self.response.read()
            self.connection.close()
            return
        threading.Thread(target=self._read, daemon=True).start()

    def json(self) -> Any:
        return json.loads(self.body)

    def _read(self) -> None:
        data: list[str] = []
        event_id = None
        try:
            while line := self.response.readline():
                line = line.decode().rstrip("\r\n")
                if line.startswith("data:"):
                    data.append(line[5:].strip())
                elif line.startswith("id:"):
                    event_id = line[3:].strip()
                elif line == "" and data:
                    body = json.loads("\n".join(data))
                    body["_id"] = event_id
                    self.events.put(body)
                    data, event_id = [], None
        except (OSError, ValueError, AttributeError):
            pass  # closed by close(), or by the server
        self.events.put(None)  # the stream ended

    def next(self, timeout: float = 15) -> dict[str, Any] | None:
        """The next event; None when the stream ended; ``queue.Empty`` after ``timeout``."""
        return self.events.get(timeout=timeout)

    def close(self) -> None:
        sock = self.connection.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.connection.close()


class WsClient:
    """A WebSocket to ``ws_url``; ``next()`` gives each message (a dict)."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.socket = connect(url, additional_headers=headers or {}, open_timeout=10, legacy=True)

    def send(self, message: dict[str, Any]) -> None:
        self.socket.send(json.dumps(message))

    def next(self, timeout: float = 15) -> dict[str, Any]:
        return json.loads(self.socket.recv(timeout=timeout))

    def closed_with(self, timeout: float = 15) -> int | None:
        """The close code, once the server closes (messages before it are skipped)."""
        try:
            while True:
                self.socket.recv(timeout=timeout)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd is not None else None
        finally:
            self.socket.close()

    def close(self) -> None:
        self.socket.close()


def collect(client: SseClient | WsClient, until, timeout: float = 30) -> list[dict[str, Any]]:
    """Events from ``client`` (pings and ``ready`` left out) up to the first that ``until``
    accepts, which is included."""
    import time

    deadline = time.monotonic() + timeout
    seen: list[dict[str, Any]] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"waited {timeout} s; got {[e.get('type') for e in seen]}")
        event = client.next(timeout=remaining)
        if event is None:
            raise EOFError(f"the stream ended; got {[e.get('type') for e in seen]}")
        if event.get("type") in ("ping", "ready"):
            continue
        seen.append(event)
        if until(event):
            return seen
