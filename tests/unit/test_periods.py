"""Cutting an aggregate's range where periods begin (eventport.export.periods)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from eventport.export.periods import period_starts, plan_counted_parts
from eventport.export.query import Rollup


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def test_period_starts_inside_the_range() -> None:
    assert list(period_starts(at(2024, 12, 30, 12), at(2025, 1, 2), "daily")) == [
        at(2024, 12, 31),
        at(2025, 1, 1),
    ]
    assert list(period_starts(at(2024, 12, 27), at(2025, 1, 14), "weekly")) == [
        at(2024, 12, 30),  # Mondays
        at(2025, 1, 6),
        at(2025, 1, 13),
    ]
    assert list(period_starts(at(2024, 11, 1), at(2025, 2, 1), "monthly")) == [
        at(2024, 12, 1),
        at(2025, 1, 1),
    ]
    assert list(period_starts(at(2023, 1, 1), at(2025, 1, 1, 0, 0, 0, 1), "yearly")) == [
        at(2024, 1, 1),
        at(2025, 1, 1),
    ]
    # Neither end counts: the start is not a cut, nor is the exclusive end.
    assert list(period_starts(at(2025, 1, 1), at(2025, 1, 2), "daily")) == []
    end_of_time = datetime.max.replace(tzinfo=UTC)
    assert list(period_starts(at(9999, 1, 1), end_of_time, "yearly")) == []
    assert list(period_starts(at(9999, 12, 1), end_of_time, "monthly")) == []


# -- planning an aggregate's parts from its events per hour ----------------------------------------


def hour_us(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def test_no_events_no_parts() -> None:
    assert (
        plan_counted_parts([], at(2024, 1, 1), at(2025, 1, 1), "daily", budget=5, workers=2) == []
    )


def test_parts_hold_at_most_the_budget_and_cut_where_days_begin() -> None:
    hours = [(hour_us(at(2024, 6, day, 10)), 4) for day in range(1, 11)]  # 4 a day, 10 days
    parts = plan_counted_parts(hours, at(2024, 6, 1), at(2024, 6, 11), "daily", budget=9, workers=1)
    assert [(p.low, p.high, p.events, p.shards) for p in parts] == [
        (at(2024, 6, 1), at(2024, 6, 3), 8, 1),
        (at(2024, 6, 3), at(2024, 6, 5), 8, 1),
        (at(2024, 6, 5), at(2024, 6, 7), 8, 1),
        (at(2024, 6, 7), at(2024, 6, 9), 8, 1),
        (at(2024, 6, 9), at(2024, 6, 11), 8, 1),
    ]


def test_parts_are_at_least_as_many_as_workers_where_periods_allow() -> None:
    hours = [(hour_us(at(2024, month, 3)), 10) for month in (1, 2, 3, 4)]
    start, end = at(2023, 12, 20), at(2024, 5, 1)
    parts = plan_counted_parts(hours, start, end, "monthly", budget=10**6, workers=2)
    assert [(p.low, p.high, p.events) for p in parts] == [
        (start, at(2024, 3, 1), 20),
        (at(2024, 3, 1), end, 20),
    ]
    one = plan_counted_parts(hours, start, end, "yearly", budget=10**6, workers=2)
    assert [(p.low, p.high, p.events, p.shards) for p in one] == [(start, end, 40, 1)]


def test_a_period_over_the_budget_is_counted_in_shards() -> None:
    hours = [(hour_us(at(2024, 3, 5, h)), 100) for h in range(24)]  # 2,400 in one week
    hours.append((hour_us(at(2024, 3, 12)), 5))
    parts = plan_counted_parts(
        hours, at(2024, 3, 4), at(2024, 3, 19), "weekly", budget=1000, workers=2
    )
    assert [(p.low, p.high, p.events, p.shards) for p in parts] == [
        (at(2024, 3, 4), at(2024, 3, 11), 2400, 3),
        (at(2024, 3, 11), at(2024, 3, 19), 5, 1),
    ]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 24 * 800), st.integers(1, 50)), max_size=60),
    st.sampled_from(["daily", "weekly", "monthly", "yearly"]),
    st.integers(1, 200),
    st.integers(1, 4),
)
def test_parts_cover_the_range_in_order_cut_at_periods_within_budget(
    offsets: list[tuple[int, int]], rollup: Rollup, budget: int, workers: int
) -> None:
    start = at(2023, 5, 17, 13)
    counts: dict[int, int] = {}
    for hours_in, events in offsets:
        moment = start + timedelta(hours=hours_in)
        key = hour_us(moment.replace(minute=0, second=0, microsecond=0))
        counts[key] = counts.get(key, 0) + events
    end = start + timedelta(hours=24 * 800 + 1)
    parts = plan_counted_parts(
        sorted(counts.items()), start, end, rollup, budget=budget, workers=workers
    )
    if not counts:
        assert parts == []
        return
    assert parts[0].low == start
    assert parts[-1].high == end
    assert all(a.high == b.low for a, b in pairwise(parts))
    cuts = set(period_starts(start, end, rollup))
    assert all(part.low in cuts for part in parts[1:])
    assert sum(part.events for part in parts) == sum(counts.values())
    for part in parts:
        inside = sum(
            n
            for h, n in counts.items()
            if part.low <= at(1970, 1, 1) + timedelta(microseconds=h) < part.high
        )
        assert part.events == inside
        assert part.events <= budget * part.shards
        assert part.shards == 1 or part.events > budget
