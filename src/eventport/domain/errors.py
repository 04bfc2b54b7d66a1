"""Errors the domain raises; the HTTP layer maps each class onto one status code."""

from __future__ import annotations

import errno
import os

# A full disk or quota, or the process's file size limit (RLIMIT_FSIZE).
_NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_NO_ROOM_WORDS = tuple(os.strerror(code) for code in _NO_ROOM)


def no_room(exc: BaseException) -> str | None:
    """The system's words when ``exc`` says there is no room to write (an OSError of a full disk,
    quota or file size limit, or a store's error quoting the system's words for one, as DuckDB's
    and PostgreSQL's do), else None."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return os.strerror(exc.errno) if exc.errno in _NO_ROOM else None
    text = str(exc)
    return next((words for words in _NO_ROOM_WORDS if words in text), None)


class DomainError(Exception):
    """Base class. ``code`` is a stable, machine-readable identifier."""

    code: str = "error"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class NotFound(DomainError):
    """The resource does not exist, or the caller may not know that it does."""

    code = "not-found"


class Forbidden(DomainError):
    """The caller can see the resource but may not do this to it."""

    code = "forbidden"


class InvalidInput(DomainError):
    """The request is well-formed but breaks a rule (bad name, duplicate, ...)."""

    code = "invalid-input"


class BadRequest(DomainError):
    """The request itself is malformed (bad JSON, wrong types, missing fields)."""

    code = "invalid-request"


class OutOfMemory(DomainError):
    """The event store needed more memory for a request than it may use: not the client's
    fault, and nothing was changed; a smaller request (a shorter time range) or a larger limit
    succeeds."""

    code = "out-of-memory"


class StoreBusy(DomainError):
    """The event store answers one request of this kind at a time and was busy for longer than
    a request waits: not the client's fault, and nothing was changed; the same request
    succeeds later."""

    code = "busy"
