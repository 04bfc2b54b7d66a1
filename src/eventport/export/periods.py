"""Cutting an aggregate's time range where its periods begin, so that parts can be counted
apart (side by side) and their rows simply put one after the other: no period, hence no group
of an aggregate, has events on both sides of a cut. Periods are those of
:mod:`eventport.export.query`: UTC days, ISO weeks from Monday, months, years.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from eventport.events.store import micros_to_datetime
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


@dataclass(frozen=True)
class CountedPart:
    """A part of an aggregate's range, ``[low, high)``, counted as ``shards`` queries: each
    holds the events whose origin hashes to its shard, and their counts add up (a distinct
    origin is in one shard only)."""

    low: datetime
    high: datetime
    events: int
    shards: int = 1


def plan_counted_parts(
    hours: Sequence[tuple[int, int]],
    start: datetime,
    end: datetime,
    rollup: Rollup,
    *,
    budget: int,
    workers: int,
) -> list[CountedPart]:
    """``[start, end)`` cut where periods begin into parts of at most ``budget`` events each,
    and into at least ``workers`` parts where the periods allow (so that they are counted side
    by side), from the events of each hour: ``(hour's start in µs since the epoch, UTC;
    events)``, in order. A single period of more than ``budget`` events is a part of its own,
    in shards of at most ``budget`` events (evenly spread, as origins hash). No events: no
    parts."""
    if budget < 1 or workers < 1:
        raise ValueError("budget and workers must be positive")
    periods: list[tuple[date, int]] = []  # each period with events: (first day, events)
    for hour, events in hours:
        first = period_start(micros_to_datetime(hour).date(), rollup)
        if periods and periods[-1][0] == first:
            periods[-1] = (first, periods[-1][1] + events)
        else:
            periods.append((first, events))
    total = sum(events for _, events in periods)
    if not total:
        return []
    aim = min(budget, -(-total // workers))  # events a part aims at
    groups: list[tuple[date, int]] = []  # (first day of the part's first period, events)
    for first, events in periods:
        if groups and groups[-1][1] and groups[-1][1] + events <= aim:
            groups[-1] = (groups[-1][0], groups[-1][1] + events)
        else:
            groups.append((first, events))
    parts = []
    for at, (first, events) in enumerate(groups):
        low = datetime(first.year, first.month, first.day, tzinfo=UTC) if at else start
        if at + 1 < len(groups):
            following = groups[at + 1][0]
            high = datetime(following.year, following.month, following.day, tzinfo=UTC)
        else:
            high = end
        parts.append(CountedPart(low, high, events, max(1, -(-events // budget))))
    return parts
