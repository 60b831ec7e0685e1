"""The realtime process: every change of a caller's files as it happens, over Server-Sent
Events (``GET /api/v2/events``) and WebSocket (``GET /api/v2/ws``); docs/API.md, "Live status".

An ASGI app (Starlette under uvicorn): thousands of idle connections live in one event loop,
none holding a thread, in a process type of its own, so open connections never take capacity
from uploads. It imports ``common`` only, reads the same settings as the API and checks the
same credentials (``common.accounts.credentials``). Run it as production does:

    uvicorn --factory realtime:create_app --host 127.0.0.1 --port 5001
"""

from __future__ import annotations

import contextlib
import logging

from starlette.applications import Starlette

from common.logs import configure_logging
from common.settings import Settings
from realtime.hub import Hub
from realtime.routes import ROUTES


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_env_or_exit()
    configure_logging(settings)
    hub = Hub(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        await hub.start()
        try:
            yield
        finally:
            await hub.stop()

    app = Starlette(routes=ROUTES, lifespan=lifespan)
    app.state.hub = hub
    logging.getLogger(__name__).debug("realtime app created")
    return app
