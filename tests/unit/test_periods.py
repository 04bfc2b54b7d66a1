"""Cutting an aggregate's range where periods begin (eventport.export.periods)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from eventport.export.periods import period_starts, split_at_periods
from eventport.export.query import ROLLUPS, Rollup


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


@pytest.mark.parametrize("rollup", ROLLUPS)
@pytest.mark.parametrize("parts", [1, 2, 3, 5])
@pytest.mark.parametrize(
    ("start", "end"),
    [
        (at(2024, 6, 1), at(2024, 7, 2)),
        (at(2024, 12, 27, 5, 1, 2, 3), at(2025, 1, 10, 0, 0, 0, 1)),
        (at(2015, 1, 1), at(2024, 12, 31)),
        (at(2024, 6, 1), at(2024, 6, 1, 1)),
        (at(9990, 1, 1), datetime.max.replace(tzinfo=UTC)),
    ],
)
def test_parts_are_consecutive_and_cut_where_periods_begin(
    rollup: Rollup, parts: int, start: datetime, end: datetime
) -> None:
    cut = split_at_periods(start, end, rollup, parts)
    assert 1 <= len(cut) <= parts
    assert cut[0][0] == start
    assert cut[-1][1] == end
    assert all(low < high for low, high in cut)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(cut))
    starts = set(period_starts(start, end, rollup))
    assert all(low in starts for low, _ in cut[1:])
    if parts > 1 and starts:
        assert len(cut) > 1


def test_halves_are_about_even() -> None:
    assert split_at_periods(at(2024, 6, 1), at(2024, 7, 2), "daily", 2) == [
        (at(2024, 6, 1), at(2024, 6, 16)),
        (at(2024, 6, 16), at(2024, 7, 2)),
    ]


def test_a_range_of_any_length_is_cut_without_walking_its_periods() -> None:
    end_of_time = datetime.max.replace(tzinfo=UTC)
    (first, second) = split_at_periods(at(1, 1, 1), end_of_time, "daily", 2)
    assert first[1] == second[0] == at(5000, 7, 2)  # midnight nearest the middle
    assert len(split_at_periods(at(1, 1, 1), end_of_time, "weekly", 7)) == 7
