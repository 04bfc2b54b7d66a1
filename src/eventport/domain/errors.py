"""Errors the domain raises; the HTTP layer maps each class onto one status code."""

from __future__ import annotations


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
