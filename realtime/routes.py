"""The realtime routes (docs/API.md, "Live status").

- ``GET /api/v2/events``: Server-Sent Events. Credentials: ``Authorization: Bearer`` (an access
  token or an API key with ``files:read``) or ``?ticket=`` (``POST /api/v2/events/ticket`` on
  the API). ``Last-Event-ID`` (or ``?after=``) replays what came after that id first.
- ``GET /api/v2/ws``: WebSocket. Credentials: the header, ``?ticket=``, or a first message
  ``{"type": "auth", "token": ...}`` within ``AUTH_WAIT`` seconds; otherwise closed with 4401.
  Client messages: ``subscribe`` (``names``: only these files; none or null: all),
  ``resume`` (``after``: replay after that id). The server sends ``ready`` once, then events,
  and ``{"type": "ping"}`` after ``PING`` seconds of silence.
- ``?all=1``: an admin's stream of every account's events.
- ``GET /healthz``: the reader's cursor, open connections, whether the doorbell is up.

Events are ``{"id", "type", "at", "file"}`` with ``file`` the v2 file object; the SSE ``id:``
is the event's id.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from common.accounts.credentials import FILES_READ, MAX_TOKEN_LENGTH, REALM, Holder, bearer
from realtime.hub import Closed, Connection, Hub, encode

#: Seconds a WebSocket client has to send its ``auth`` message.
AUTH_WAIT = 5.0
#: Seconds of silence after which a ping is sent (SSE: a comment line).
PING = 25.0


class Refused(Exception):
    """A request the stream cannot be opened for: the API's error shape and a WebSocket
    close code."""

    def __init__(self, status: int, code: str, message: str, close: int, problem: str = ""):
        super().__init__(message)
        self.status, self.code, self.message, self.close, self.problem = (
            status,
            code,
            message,
            close,
            problem,
        )

    def response(self) -> Response:
        headers = {}
        if self.status == 401:
            headers["WWW-Authenticate"] = (
                f'{REALM}, error="invalid_token", error_description="{self.problem}"'
                if self.problem
                else REALM
            )
        body = {"error": self.message, "code": self.code}
        return JSONResponse(body, self.status, headers=headers)


def _unauthorized(problem: str = "") -> Refused:
    message = "Недействительные учетные данные" if problem else "Требуется авторизация"
    return Refused(401, "UNAUTHORIZED", message, 4401, problem)


def _hub(connection: HTTPConnection) -> Hub:
    return connection.app.state.hub


def _bearer(connection: HTTPConnection) -> str | None:
    header = connection.headers.get("authorization")
    if header is None:
        return None
    token = bearer(header)
    if token is None:
        raise _unauthorized("expected 'Authorization: Bearer <token>'")
    return token


async def _holder(connection: HTTPConnection, token: str | None) -> Holder:
    hub = _hub(connection)
    ticket = connection.query_params.get("ticket")
    if token is not None:
        if len(token) > MAX_TOKEN_LENGTH:
            raise _unauthorized("the token is too long")
        holder = await hub.holder_of(token)
        problem = "the token is expired, revoked or not signed by this service"
    elif ticket is not None:
        holder = await hub.redeem(ticket)
        problem = "the ticket is unknown, used or expired"
    else:
        raise _unauthorized()
    if holder is None:
        raise _unauthorized(problem)
    return holder


def _admitted(connection: HTTPConnection, holder: Holder) -> bool:
    """Whether the caller may have this stream; the stream's ``everyone`` flag."""
    if FILES_READ not in holder.scopes:
        raise Refused(403, "INSUFFICIENT_SCOPE", "Недостаточно прав для этого действия", 4403)
    everyone = connection.query_params.get("all", "") in ("1", "true")
    if everyone and not holder.is_admin:
        raise Refused(403, "FORBIDDEN", "Доступ запрещен", 4403)
    return everyone


def _after(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    if not value.isdigit() or len(value) > 19:
        raise Refused(400, "VALIDATION_ERROR", "Неверные данные", 4400)
    return int(value)


# -- Server-Sent Events ------------------------------------------------------------------------


async def events_stream(request: Request) -> Response:
    try:
        holder = await _holder(request, _bearer(request))
        everyone = _admitted(request, holder)
        after = _after(request.headers.get("last-event-id") or request.query_params.get("after"))
    except Refused as refused:
        return refused.response()
    hub = _hub(request)
    connection = hub.join(holder, everyone)

    async def stream():
        try:
            if after is not None:
                bodies, upto = await hub.replay(connection, after)
                for body in bodies:
                    yield _sse(body)
                connection.last = max(connection.last, upto)
            while True:
                item = await connection.queue.get()
                if isinstance(item, Closed):
                    return
                if item.id > connection.last:
                    connection.last = item.id
                    yield _sse(item.body)
        finally:
            hub.leave(connection)

    return EventSourceResponse(
        stream(),
        ping=int(PING),
        headers={"Cache-Control": "no-store"},
        send_timeout=30,
    )


def _sse(body: dict[str, Any]) -> ServerSentEvent:
    return ServerSentEvent(data=encode(body), id=str(body["id"]))


# -- WebSocket ---------------------------------------------------------------------------------


async def websocket_stream(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        holder = await _ws_holder(websocket)
        everyone = _admitted(websocket, holder)
    except Refused as refused:
        await websocket.close(refused.close, refused.message)
        return
    except WebSocketDisconnect:
        return
    hub = _hub(websocket)
    connection = hub.join(holder, everyone)
    try:
        await websocket.send_text(
            encode({"type": "ready", "user": holder.username, "last_id": hub.cursor})
        )
        # Whichever ends first ends both: the client leaving (its reader sees the close) must
        # not leave the sender waiting for its next event or ping.
        sending = asyncio.create_task(_send(websocket, connection))
        listening = asyncio.create_task(_listen(websocket, hub, connection))
        try:
            await asyncio.wait({sending, listening}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sending, listening):
                task.cancel()
            await asyncio.gather(sending, listening, return_exceptions=True)
        ended = sending.done() and not sending.cancelled() and sending.exception() is None
        closed = sending.result() if ended else None
        if closed is not None:
            await websocket.close(closed.code, closed.reason)
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass  # the client went away
    finally:
        hub.leave(connection)


async def _ws_holder(websocket: WebSocket) -> Holder:
    token = _bearer(websocket)
    if token is None and websocket.query_params.get("ticket") is None:
        try:
            async with asyncio.timeout(AUTH_WAIT):
                first = await websocket.receive_text()
        except TimeoutError:
            raise _unauthorized("no auth message within 5 seconds") from None
        message = _message(first)
        token = message.get("token") if message.get("type") == "auth" else None
        if not isinstance(token, str):
            raise _unauthorized('the first message must be {"type": "auth", "token": ...}')
    return await _holder(websocket, token)


def _message(text: str) -> dict[str, Any]:
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    return message if isinstance(message, dict) else {}


async def _listen(websocket: WebSocket, hub: Hub, connection: Connection) -> None:
    """The client's messages: ``subscribe`` and ``resume``; anything else is ignored."""
    while True:
        message = _message(await websocket.receive_text())
        kind = message.get("type")
        if kind == "subscribe":
            names = message.get("names")
            valid = isinstance(names, list) and all(isinstance(n, str) for n in names)
            connection.names = frozenset(names) if valid else None
        elif kind == "resume":
            after = message.get("after")
            if isinstance(after, int) and not isinstance(after, bool) and after >= 0:
                connection.offer(("resume", after))


async def _send(websocket: WebSocket, connection: Connection) -> Closed | None:
    """Everything the server sends; returns when the hub closes the connection."""
    hub = _hub(websocket)
    while True:
        try:
            # asyncio.timeout, not wait_for (which on Python 3.11 swallows a cancellation that
            # comes with an item: the handler would wait for this task forever).
            async with asyncio.timeout(PING):
                item = await connection.queue.get()
        except TimeoutError:
            await websocket.send_text('{"type":"ping"}')
            continue
        if isinstance(item, Closed):
            return item
        if isinstance(item, tuple):  # ("resume", after)
            bodies, upto = await hub.replay(connection, item[1])
            for body in bodies:
                await websocket.send_text(encode(body))
            connection.last = max(connection.last, upto)
        elif item.id > connection.last:
            connection.last = item.id
            await websocket.send_text(encode(item.body))


# -- health ------------------------------------------------------------------------------------


async def healthz(request: Request) -> Response:
    hub = _hub(request)
    return JSONResponse(
        {
            "status": "ok",
            "cursor": hub.cursor,
            "connections": len(hub.connections),
            "doorbell": "up" if hub.doorbell_up else "down (polling)",
        }
    )


ROUTES = [
    Route("/api/v2/events", events_stream, methods=["GET"]),
    WebSocketRoute("/api/v2/ws", websocket_stream),
    Route("/healthz", healthz, methods=["GET"]),
]
