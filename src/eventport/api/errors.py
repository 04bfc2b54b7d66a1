"""Every error leaves as JSON ``{"message": ..., "code": ...}``; bad input is never a 500."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy.exc import IntegrityError
from sqlalchemy.exc import OperationalError as SQLAlchemyOperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from eventport.control.database import database_unreachable
from eventport.domain.errors import (
    BadRequest,
    DomainError,
    Forbidden,
    InvalidInput,
    NotFound,
    OutOfMemory,
    StoreBusy,
)

log = logging.getLogger(__name__)

#: The Retry-After of a 503 database-unavailable (a PostgreSQL restart takes a few seconds).
DATABASE_RETRY_AFTER_SECONDS = 5


class Unauthorized(DomainError):
    code = "unauthorized"


class PayloadTooLarge(DomainError):
    code = "request-too-large"


class UnsupportedMediaType(DomainError):
    code = "unsupported-media-type"


class InsufficientStorage(DomainError):
    """The server cannot store what it was sent (its disk or quota is full): not the client's
    fault, and nothing was kept; the same request may succeed once there is room."""

    code = "insufficient-storage"


class SpoolUnavailable(DomainError):
    """The server cannot write uploads where it keeps them (a read-only file system, a
    directory it may not write): its operator's to mend; nothing was kept."""

    code = "spool-unavailable"


STATUS: dict[type[DomainError], int] = {
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    InsufficientStorage: 507,
    SpoolUnavailable: 503,
    OutOfMemory: 503,
    StoreBusy: 503,
    Unauthorized: 401,
    NotFound: 404,
    Forbidden: 403,
    InvalidInput: 422,
    BadRequest: 400,
}


class ErrorBody(BaseModel):
    """What every error answer holds (one adds a field: a taken package name's ``type``)."""

    model_config = ConfigDict(extra="allow")

    message: str
    code: str


_MEANINGS = {
    400: "A malformed request: invalid JSON, a missing or wrong-typed field or parameter.",
    401: "No API token, or an unknown or revoked one.",
    403: "The caller may see the resource but not do this to it.",
    404: "No such resource, or one the caller may not know exists.",
    413: "The request body is larger than the server takes.",
    415: "The body's Content-Type is not one this route reads.",
    422: "A well-formed request that breaks a rule (a name taken, too many active imports).",
    503: "The server lacks the memory, the database or the store for this request now "
    "(busy, out-of-memory, database-unavailable); it may succeed later.",
    507: "The server has no room to store the upload; nothing of it was kept.",
}
#: The errors every API route may answer (its own JSON error body, not FastAPI's 422 shape).
COMMON_ERRORS = (400, 401, 403, 404, 413, 422, 503)  # 503: database-unavailable, anywhere


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses, each with the :class:`ErrorBody`."""
    return {status: {"model": ErrorBody, "description": _MEANINGS[status]} for status in statuses}


def documented_as_json(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """As :func:`documented`, for a route whose answer is not JSON (a CSV or NDJSON export):
    FastAPI would document its errors in the answer's media type, but they are JSON."""
    schema = {"$ref": f"#/components/schemas/{ErrorBody.__name__}"}
    return {
        status: {
            "description": _MEANINGS[status],
            "content": {"application/json": {"schema": schema}},
        }
        for status in statuses
    }


def status_of(exc: DomainError) -> int:
    return next((STATUS[cls] for cls in type(exc).__mro__ if cls in STATUS), 400)


def error_response(status: int, message: str, code: str, **extra: Any) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"message": message, "code": code, **extra}, status, headers=headers)


WHOLE_BODY_TYPES = {"model_attributes_type", "model_type", "dict_type"}


def _describe(error: dict[str, Any]) -> str:
    location = [str(part) for part in error.get("loc", ()) if part not in ("body",)]
    where = ".".join(location)
    kind = error.get("type")
    if kind == "json_invalid":
        reason = error.get("ctx", {}).get("error", "parse error")
        return f"request body is not valid JSON ({reason})"
    if kind == "missing":
        return f"{where} is required" if where else "a JSON request body is required"
    if isinstance(error.get("input"), bytes):
        # FastAPI parses the body as JSON only when the Content-Type says JSON; else it is bytes.
        return "request body must be JSON sent with 'Content-Type: application/json'"
    if not where and kind in WHOLE_BODY_TYPES:
        return "request body must be a JSON object"
    if kind == "value_error" and "error" in error.get("ctx", {}):
        message = str(error["ctx"]["error"])
    else:
        message = str(error.get("msg", "is invalid"))
    return f"{where}: {message}" if where else message


_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def _methods_of(request: Request) -> list[str]:
    """The methods some route takes at the request's path (Starlette's own 405 names only
    those of the first route whose path matched, one of several for a path)."""
    routes = request.app.router.routes
    return [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes
        )
    ]


def install(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def domain_error(_: Request, exc: DomainError) -> JSONResponse:
        return error_response(status_of(exc), exc.message, exc.code)

    from eventport.api.deps import refused_caller  # deps raises this module's errors

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        if (refused := await refused_caller(request)) is not None:  # 401 comes first
            return error_response(401, refused.message, refused.code)
        problems = list(dict.fromkeys(_describe(e) for e in exc.errors()))
        return error_response(400, "; ".join(problems[:5]), BadRequest.code)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and isinstance(exc.__cause__, ValueError | RecursionError):
            if (refused := await refused_caller(request)) is not None:
                return error_response(401, refused.message, refused.code)
            # FastAPI's bare "There was an error parsing the body": say what was wrong with it.
            reason = {
                UnicodeDecodeError: "it is not UTF-8 text",
                RecursionError: "it is nested too deeply",
            }.get(type(exc.__cause__), str(exc.__cause__)[:200])
            message = f"request body is not valid JSON ({reason})"
            return error_response(400, message, BadRequest.code)
        code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        message = str(exc.detail)
        where = f"{request.method} {request.url.path[:200]}"
        if exc.status_code == 404 and message == "Not Found":  # no route matched
            message = f"no such endpoint: {where}"
        elif exc.status_code == 405:
            message = f"method not allowed: {where}"
        response = error_response(exc.status_code, message, code)
        if exc.status_code == 405:  # RFC 9110: Allow names every method the path takes
            response.headers["Allow"] = ", ".join(_methods_of(request))
        return response

    @app.exception_handler(IntegrityError)
    async def conflict(_: Request, exc: IntegrityError) -> JSONResponse:
        # Concurrent requests kept changing the same thing (see api/routing.py): nothing of
        # this one was kept, and the same request may well succeed now.
        log.warning("a request lost every retry to concurrent changes: %s", exc.orig)
        message = "a concurrent request changed the same resource; nothing was changed: try again"
        return error_response(409, message, "conflict")

    @app.exception_handler(SQLAlchemyOperationalError)
    @app.exception_handler(psycopg.OperationalError)
    async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        # PostgreSQL restarting or out of reach, SQLite locked past its wait: the same request
        # will likely work in a moment (before, a 500 and a dropped connection). Any other
        # error of these classes (a missing column, a deadlock) is the server's: a 500.
        if not database_unreachable(exc):
            return await unexpected(request, exc)
        log.warning("a request found the database unavailable: %s", exc)
        response = error_response(
            503, "the database is unavailable for the moment; try again", "database-unavailable"
        )
        response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
        return response

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, "internal server error", "internal-error")
