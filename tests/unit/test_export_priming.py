"""An answer's first rows are fetched before its status goes out (api/v2/export.primed): a
store that fails while fetching them gives an error answer, not a 200 cut short."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from eventport.api.v2.export import primed
from eventport.domain.errors import OutOfMemory


def rows_then_failure(good: int, closed: list[bool]) -> Iterator[int]:
    try:
        yield from range(good)
        raise OutOfMemory("the store ran out of memory in a later part")
    finally:
        closed.append(True)


def test_a_failure_within_the_rows_fetched_ahead_is_raised_at_once() -> None:
    """An aggregate's parts run side by side: its third row may be the one that fails."""
    closed: list[bool] = []
    with pytest.raises(OutOfMemory):
        primed(rows_then_failure(2, closed), ahead=10)
    assert closed == [True]


def test_the_rows_fetched_ahead_and_the_rest_come_in_order() -> None:
    closed: list[bool] = []
    items = primed(rows_then_failure(5, closed), ahead=3)
    assert closed == []  # nothing failed yet: the rest is still lazy
    seen = [next(items) for _ in range(5)]
    assert seen == [0, 1, 2, 3, 4]
    with pytest.raises(OutOfMemory):
        next(items)
    assert closed == [True]


def test_fewer_rows_than_ahead_and_none_at_all() -> None:
    assert list(primed(iter([1, 2]), ahead=10)) == [1, 2]
    assert list(primed(iter([]), ahead=10)) == []
    assert list(primed(iter([7]))) == [7]
