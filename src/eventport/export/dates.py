"""The date range of an export: ``YYYY-MM-DD`` dates, start inclusive, end exclusive, UTC;
an end equal to the start asks for that one day.

Scarf's own PostgreSQL exporter asks for the days after the last one it holds "through the end
of yesterday", with ``start_date`` and ``end_date`` both yesterday on its daily run; refused
(an empty range), that run failed every day. The day it names is what it wants, and no other
request meant anything by an empty range.

Both API versions use these rules; only the parameter names differ (v1 ``startDate``, v2
``start_date``). Errors carry Scarf's export error codes (its ``PackageEventExportError``):
``range-too-long`` for a range past the limit, and ``invalid-package-query`` for a missing or
malformed date or an end not after the start, since that schema has no code of its own for them.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Final

from eventport.domain.errors import BadRequest

#: Scarf allows event exports of up to 31 days.
MAX_EVENT_DAYS: Final = 31
#: Aggregates are small whatever the range, so they may span ten years.
MAX_AGGREGATE_DAYS: Final = 3653
INVALID: Final = "invalid-package-query"
TOO_LONG: Final = "range-too-long"

_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def parse_date(name: str, value: str | None) -> date:
    """One ``YYYY-MM-DD`` date; :class:`BadRequest` naming the parameter when it is not one."""
    if value is None or value == "":
        raise BadRequest(f"{name} is required (a date, YYYY-MM-DD)", code=INVALID)
    if _DATE.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise BadRequest(f"{name} {value[:40]!r} is not a date (YYYY-MM-DD)", code=INVALID)


def parse_range(
    start: str | None,
    end: str | None,
    *,
    max_days: int,
    names: tuple[str, str] = ("start_date", "end_date"),
) -> tuple[datetime, datetime]:
    """``[start, end)`` as aware UTC datetimes at midnight, at most ``max_days`` long (an end
    equal to the start: that day)."""
    first = parse_date(names[0], start)
    last = parse_date(names[1], end)
    if last < first:
        raise BadRequest(
            f"{names[1]} {last.isoformat()} must not be before {names[0]} {first.isoformat()} "
            f"(the end date is exclusive; the same date asks for that one day)",
            code=INVALID,
        )
    if last == first:
        if last == date.max:  # its end, 10000-01-01, is no date
            raise BadRequest(f"{names[1]} {last.isoformat()} is past the last day", code=INVALID)
        last += timedelta(days=1)
    if last - first > timedelta(days=max_days):
        raise BadRequest(
            f"the range from {first.isoformat()} to {last.isoformat()} is "
            f"{(last - first).days} days long; at most {max_days} days are allowed",
            code=TOO_LONG,
        )
    return _midnight(first), _midnight(last)


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)
