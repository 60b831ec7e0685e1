"""A small TCP proxy for fault and speed tests: add latency, cap bandwidth, or cut the line.

It listens on a free loopback port and forwards to ``target``. ``delay`` is added once per
request burst (the first bytes a client sends after a pause), ``bandwidth`` caps bytes per
second in each direction (with ``buffering``, what a client sends is taken at once and
forwarded at that pace, to the end, also after the client has gone, as a front proxy that
buffers request bodies does), ``down()`` closes every connection and refuses new ones until
``up()``, and ``silence()`` makes it a black hole until ``up()``: connections are accepted and
kept open, and every byte either way is dropped, as when a network path or a host dies
without a word (nothing is refused, nothing is answered).
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from collections.abc import Iterator


class TcpProxy:
    def __init__(self, target_port: int, *, delay: float = 0.0, bandwidth: int | None = None):
        self.target = ("127.0.0.1", target_port)
        self.delay = delay
        self.bandwidth = bandwidth
        self.buffering = False
        #: Bytes taken from clients and not yet handed on (with ``buffering``).
        self.backlog = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._accepting = threading.Event()
        self._accepting.set()
        self._silent = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        #: Connections accepted so far (held open in silence or forwarded).
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def down(self) -> None:
        """Cut every connection and refuse new ones."""
        self._accepting.clear()
        with self._lock:
            for sock in list(self._sockets):
                _close(sock)
            self._sockets.clear()

    def silence(self) -> None:
        """Drop everything from now on: open connections go quiet, new ones are accepted and
        never answered."""
        self._silent.set()

    def up(self) -> None:
        self._silent.clear()
        self._accepting.set()

    def close(self) -> None:
        self._closed = True
        self.down()
        _close(self._listener)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._accepting.is_set():
                _close(client)
                continue
            self.accepted += 1
            if self._silent.is_set():  # held open, never read nor answered
                with self._lock:
                    self._sockets.add(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            for source, sink, delayed in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(
                    target=self._pump, args=(source, sink, delayed), daemon=True
                ).start()

    def _pump(self, source: socket.socket, sink: socket.socket, delayed: bool) -> None:
        last = 0.0
        try:
            for chunk in self._chunks(source, buffered=delayed and self.buffering):
                if self._silent.is_set():
                    continue  # dropped on the floor
                now = time.monotonic()
                if delayed and self.delay and now - last > 0.005:
                    time.sleep(self.delay)  # latency of each new request on the line
                last = time.monotonic()
                if self.bandwidth:
                    time.sleep(len(chunk) / self.bandwidth)
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with self._lock:
                    self._sockets.discard(sock)
                _close(sock)

    def _chunks(self, source: socket.socket, buffered: bool) -> Iterator[bytes]:
        """What ``source`` sends, as it comes; ``buffered``: read ahead by a thread of its own,
        so the sender is never held back by the pace of the forwarding."""
        if not buffered:
            while chunk := source.recv(65536):
                yield chunk
            return
        chunks: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()

        def read() -> None:
            try:
                while chunk := source.recv(65536):
                    with self._lock:
                        self.backlog += len(chunk)
                    chunks.put(chunk)
            except OSError:
                pass
            finally:
                chunks.put(None)

        threading.Thread(target=read, daemon=True).start()
        for chunk in iter(chunks.get, None):
            yield chunk  # handed on when the caller asks for the next one
            with self._lock:
                self.backlog -= len(chunk)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


def main() -> None:
    """``python -m testkit.tcpproxy TARGET_PORT [--delay S]``: run a proxy in a process of its
    own (the bench does, so that relaying does not share the load generator's GIL); prints
    its port, then serves until killed."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    parser.add_argument("target_port", type=int)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    proxy = TcpProxy(args.target_port, delay=args.delay)
    print(proxy.port, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
