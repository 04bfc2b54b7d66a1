"""ASGI middleware that sees every request before routing: URL hygiene, body size, HEAD, and
requests the server's shutdown cuts off."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eventport.api.errors import error_response
from eventport.domain.errors import BadRequest

log = logging.getLogger(__name__)

MAX_MANAGEMENT_BODY = 1024 * 1024


class BodyLimit:
    """A cap on management request bodies, checked while the body streams in.

    Management bodies are a few hundred bytes; without a cap one request could make the server
    buffer gigabytes (FastAPI reads and parses a JSON body before the route's authorization
    runs). The bulk import routes (``streaming``, their endpoints) stream to disk instead and
    are exempt. Which route a request goes to is known only once the router has chosen it, so
    the cap is decided when the route first reads the body, by the endpoint the router put in
    the scope: not by how the path ends (a package, organization or pixel may be named
    ``import``).
    """

    def __init__(
        self,
        app: ASGIApp,
        streaming: Collection[Callable[..., Any]],
        limit: int = MAX_MANAGEMENT_BODY,
    ) -> None:
        self.app = app
        self.streaming = streaming
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        too_large = declared is not None and declared.isdigit() and int(declared) > self.limit
        capped: bool | None = None  # decided at the first read, once the route is known
        seen = 0
        exceeded = False

        async def counting_receive() -> Message:
            nonlocal capped, seen, exceeded
            if capped is None:
                capped = scope.get("endpoint") not in self.streaming
                exceeded = capped and too_large
            if exceeded:
                return {"type": "http.request", "body": b"", "more_body": False}
            message = await receive()
            if capped and message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    # End the body here; whatever the app answers is replaced by a 413.
                    exceeded = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def replacing_send(message: Message) -> None:
            if not exceeded:
                await send(message)
            elif message["type"] == "http.response.start":
                await self._refuse(scope, receive, send)

        await self.app(scope, counting_receive, replacing_send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"request body is larger than {self.limit} bytes"
        await error_response(413, message, "request-too-large")(scope, receive, send)


class RejectNulInUrl:
    """ASGI middleware: a NUL in the path or query is bad input (PostgreSQL cannot compare it)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (
            "\x00" in scope["path"] or b"%00" in scope.get("query_string", b"")
        ):
            response = error_response(
                400, "the URL must not contain NUL characters (%00)", BadRequest.code
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class HeadAsGet:
    """ASGI middleware: HEAD is answered as GET is, without the body (RFC 9110: a server that
    answers GET answers HEAD), on every route, where FastAPI's routes take only the methods
    they name (a HEAD of a CSV export was a 405). The app sees a GET; uvicorn, whose scope
    still says HEAD, sends the headers and no body. A streamed answer (an export) is still
    made whole, and its body dropped."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "HEAD":
            scope = {**scope, "method": "GET"}
        await self.app(scope, receive, send)


class AnswerWhenCutOff:
    """ASGI middleware: a request still running when the server's graceful shutdown runs out
    (an upload slower than its wait, say) is answered 503 ``server-shutting-down`` with a
    Retry-After, the API's JSON error, where it was uvicorn's plain-text 500 and an error with
    a traceback in the log (an operations hunt). What the request had begun is undone as for
    any error (an upload leaves nothing); the task ends right after, as the server does."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def noting_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, noting_send)
        except asyncio.CancelledError:
            if started:
                raise
            log.info(
                "%s %s was cut off by the server's shutdown: answered 503",
                scope["method"],
                scope["path"],
            )
            response = error_response(
                503, "the server is shutting down: send the request again", "server-shutting-down"
            )
            response.headers["Retry-After"] = "5"
            await response(scope, receive, send)
