"""Management routes run their unit of work again when a concurrent request won a race.

Every create or rename checks that a name is free, then writes. Two requests for the same name
at once can both pass the check; the database's unique constraint then refuses the second's
write (an ``IntegrityError``), which would leave as a 500. Run again, the second request's
check sees the first's committed row and answers what it would have answered a moment later:
the 422 of a taken name, or, for an idempotent change such as a member's role, success. The
constraint refused the whole transaction, so nothing of the first try was kept.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

from fastapi.routing import APIRoute
from sqlalchemy.exc import IntegrityError
from starlette.convertors import Convertor, register_url_convertor

log = logging.getLogger(__name__)

ATTEMPTS = 3


def retrying_conflicts(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """``endpoint`` (a plain function that opens its own sessions) run up to ``ATTEMPTS`` times
    while a constraint refuses its writes; the last refusal is raised (and answered 409)."""

    @functools.wraps(endpoint)
    def run(*args: Any, **kwargs: Any) -> Any:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return endpoint(*args, **kwargs)
            except IntegrityError:
                if attempt == ATTEMPTS:
                    raise
                log.info("%s: a concurrent change won; running it again", endpoint.__name__)
        raise AssertionError("unreachable")

    # FastAPI reads the parameters from the signature; resolve the endpoint module's string
    # annotations here, where its globals are known.
    run.__signature__ = inspect.signature(endpoint, eval_str=True)  # type: ignore[attr-defined]
    return run


class ControlRoute(APIRoute):
    """A route whose (synchronous) endpoint is run again when it lost a uniqueness race."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if not inspect.iscoroutinefunction(endpoint):
            endpoint = retrying_conflicts(endpoint)
        super().__init__(path, endpoint, **kwargs)


def register_segment(name: str, pattern: str) -> None:
    """Routes may then name ``{param:name}``: a segment that matches ``pattern`` only, taken as
    it is, so that a route of such a segment can come before, and leave the others to, a wider
    one."""

    class Segment(Convertor[str]):
        regex = pattern

        def convert(self, value: str) -> str:
            return value

        def to_string(self, value: str) -> str:
            return value

    register_url_convertor(name, Segment())
