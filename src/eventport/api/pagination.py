"""Cursor pages over already-sorted lists: ``after`` names the last item the client saw."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar

from fastapi import Query, Request

from eventport.domain.errors import BadRequest

T = TypeVar("T")
DEFAULT_PER_PAGE = 30
MAX_PER_PAGE = 1000
# The query parameters of a page. Their bounds are documented here and checked by page(), which
# words the error (FastAPI's own check would answer in pydantic's words).
PerPage = Annotated[
    int | None,
    Query(
        description=f"Items a page (default {DEFAULT_PER_PAGE})",
        json_schema_extra={"minimum": 1, "maximum": MAX_PER_PAGE},
    ),
]
After = Annotated[
    str | None,
    Query(
        description="The cursor of the last item seen: the next page starts after it",
        json_schema_extra={"minLength": 1},
    ),
]


def page(
    items: Sequence[T],
    after: str | None,
    per_page: int | None,
    cursor: Callable[[T], tuple[str, ...]],
    locate: Callable[[str], Callable[[T], bool] | None] | None = None,
) -> tuple[list[T], str | None]:
    """The items after the cursor, and the cursor of the next page (None on the last page).

    A cursor naming no item of the list (one a filter now leaves out, e.g. an import that has
    finished while a client pages through the running ones) is placed by ``locate``, when the
    list has one: it answers, for the item the cursor names, which items come after it.
    """
    size = DEFAULT_PER_PAGE if per_page is None else per_page
    if not 1 <= size <= MAX_PER_PAGE:
        raise BadRequest(f"per_page must be between 1 and {MAX_PER_PAGE}")
    start = 0
    if after is not None:
        matches = [i for i, item in enumerate(items) if after in cursor(item)]
        if matches:
            start = matches[-1] + 1
        else:
            comes_after = None if locate is None else locate(after)
            if comes_after is None:
                raise BadRequest(f"unknown cursor after={after[:80]!r}")
            start = next((i for i, item in enumerate(items) if comes_after(item)), len(items))
    chunk = list(items[start : start + size])
    more = start + size < len(items)
    return chunk, (cursor(chunk[-1])[0] if more and chunk else None)


def links(request: Request, next_after: str | None) -> dict[str, Any]:
    result: dict[str, Any] = {"self": str(request.url)}
    if next_after is not None:
        result["next"] = str(request.url.include_query_params(after=next_after))
    return result
