"""Run the realtime process as production does: ``python -m realtime``.

uvicorn serves ``realtime:create_app`` on REALTIME_BIND (default ``127.0.0.1:5001``); at
shutdown, open streams get ``SHUTDOWN_GRACE`` seconds to close (their clients reconnect and
resume from the last id they got) instead of holding the process up forever.
"""

from __future__ import annotations

import os

import uvicorn

#: Seconds open streams get at shutdown.
SHUTDOWN_GRACE = 3
#: The largest message a client may send (its messages are small JSON objects).
WS_MAX_SIZE = 64 * 1024


def main() -> None:
    host, _, port = os.environ.get("REALTIME_BIND", "127.0.0.1:5001").rpartition(":")
    uvicorn.run(
        "realtime:create_app",
        factory=True,
        host=host or "127.0.0.1",
        port=int(port),
        access_log=False,
        timeout_graceful_shutdown=SHUTDOWN_GRACE,
        ws_max_size=WS_MAX_SIZE,
        # No permessage-deflate: its zlib state is ~300 KiB a connection where events are a few
        # hundred bytes of JSON (bench P8: 2,000 idle sockets).
        ws_per_message_deflate=False,
        # A front proxy's X-Forwarded-For is believed from loopback only (uvicorn's default).
        proxy_headers=True,
    )


if __name__ == "__main__":
    main()
