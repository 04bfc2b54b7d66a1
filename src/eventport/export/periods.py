"""Cutting an aggregate's time range where its periods begin, so that parts can be counted
apart (side by side) and their rows simply put one after the other: no period, hence no group
of an aggregate, has events on both sides of a cut. Periods are those of
:mod:`eventport.export.query`: UTC days, ISO weeks from Monday, months, years.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise

from eventport.export.query import Rollup


def period_start(day: date, rollup: Rollup) -> date:
    """The first day of the period that holds ``day``."""
    if rollup == "daily":
        return day
    if rollup == "weekly":
        return day - timedelta(days=day.weekday())
    if rollup == "monthly":
        return day.replace(day=1)
    return day.replace(month=1, day=1)


def next_period(first: date, rollup: Rollup) -> date | None:
    """The first day of the period after the one that begins on ``first`` (None past 9999)."""
    try:
        if rollup == "daily":
            return first + timedelta(days=1)
        if rollup == "weekly":
            return first + timedelta(days=7)
        if rollup == "monthly":
            return first.replace(year=first.year + first.month // 12, month=first.month % 12 + 1)
        return first.replace(year=first.year + 1)
    except (OverflowError, ValueError):
        return None


def period_starts(start: datetime, end: datetime, rollup: Rollup) -> Iterator[datetime]:
    """The instants strictly inside ``(start, end)`` at which a period begins (aware UTC)."""
    first: date | None = period_start(start.astimezone(UTC).date(), rollup)
    while first is not None:
        moment = datetime(first.year, first.month, first.day, tzinfo=UTC)
        if moment >= end:
            return
        if moment > start:
            yield moment
        first = next_period(first, rollup)


def split_at_periods(
    start: datetime, end: datetime, rollup: Rollup, parts: int
) -> list[tuple[datetime, datetime]]:
    """``[start, end)`` cut into at most ``parts`` consecutive ranges of about equal length,
    each cut where a period begins (fewer ranges when fewer periods begin inside). Looks only
    near each cut, so a range of any length costs the same."""
    chosen: list[datetime] = []
    for part in range(1, parts):
        aim = start + (end - start) * part / parts
        near = [cut for cut in _period_starts_around(aim, rollup) if start < cut < end]
        if near:
            best = min(near, key=lambda cut: abs(cut - aim))
            if not chosen or best > chosen[-1]:
                chosen.append(best)
    bounds = [start, *chosen, end]
    return list(pairwise(bounds))


def _period_starts_around(moment: datetime, rollup: Rollup) -> list[datetime]:
    """The start of the period that holds ``moment`` and of the next one."""
    first: date | None = period_start(moment.astimezone(UTC).date(), rollup)
    starts = []
    for _ in range(2):
        if first is None:
            break
        starts.append(datetime(first.year, first.month, first.day, tzinfo=UTC))
        first = next_period(first, rollup)
    return starts
