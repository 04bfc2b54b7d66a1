"""What an export asks of the event store: the shared, store-neutral vocabulary.

The API layer decides *which* events a caller may export (owners, packages, pixels, dates) and
turns that into an :class:`EventQuery`; each event store answers it with
:meth:`~eventport.events.store.EventStore.export_batches` (event rows, streamed as Arrow record
batches) and :meth:`~eventport.events.store.EventStore.aggregate` (grouped counts, streamed).

Counting rules, the same in both stores:

* An event counts in every breakdown except ``by-total-do-not-track`` only if it is neither
  ``dnt`` nor ``excluded`` (NULL counts as false). ``by-total-do-not-track`` counts exactly the
  ``dnt`` events (excluded or not).
* ``total_unique`` is the number of distinct non-null ``origin_id`` values in the group.
* Dates are UTC. ``daily`` groups by calendar day, ``weekly`` by ISO week (starting Monday),
  ``monthly`` by month, ``yearly`` by year; the row's ``date`` is the first day of the period.
* Every breakdown groups the unknown value (NULL) into a row of its own, so every breakdown but
  ``by-variable`` (and ``by-total-do-not-track``) sums to ``by-total`` for the same date and
  artifact.
* ``by-educational-organization`` and ``by-govermental-organization`` give the company of the
  events whose ``origin_connection_type`` is that kind (:data:`ORGANIZATION_KINDS`); every other
  event (another kind, or none known) counts in the unknown row, as a network that is no cloud
  counts in ``by-cloudprovider``'s.
* ``by-variable``: each event's ``variables`` (``a=1&b=2``, urlencoded with ``quote_plus``)
  gives one (variable, value) pair per non-empty ``&``-separated item, both url-decoded the way
  :func:`variable_pair` does (``+`` is a space, invalid UTF-8 becomes U+FFFD, a ``%`` not
  followed by two hex digits stays); an event without variables (NULL or empty) gives no row.
  Splitting is on the first ``=``; an item with no ``=`` is a variable with an empty value. An
  event counts once in each pair it gives, however many of its items give that pair.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Final, Literal
from urllib.parse import unquote_plus

import pyarrow as pa

from eventport.events.schema import ARROW_TYPES, COLUMNS

Rollup = Literal["daily", "weekly", "monthly", "yearly"]
ROLLUPS: Final[tuple[Rollup, ...]] = ("daily", "weekly", "monthly", "yearly")

#: Breakdown → the event columns it groups by (empty: the total only). Scarf's names.
BREAKDOWNS: Final[dict[str, tuple[str, ...]]] = {
    "by-total": (),
    "by-total-do-not-track": (),
    "by-country": ("origin_country",),
    "by-company": ("origin_company", "origin_domain"),
    "by-cloudprovider": ("cloud_provider_name", "cloud_provider_domain"),
    "by-platform": ("platform",),
    "by-version": ("version",),
    "by-client": ("client", "client_version"),
    "by-domain": ("domain",),
    "by-referer": ("referer",),
    # Company rows of events whose network is of that kind (origin_connection_type).
    "by-educational-organization": ("origin_company", "origin_domain"),
    "by-govermental-organization": ("origin_company", "origin_domain"),  # sic: Scarf's spelling
    "by-variable": ("variable", "value"),  # pairs from the variables column, see above
}
#: The connection type the two organization breakdowns keep.
ORGANIZATION_KINDS: Final[dict[str, str]] = {
    "by-educational-organization": "education",
    "by-govermental-organization": "government",
}


@dataclass(frozen=True)
class EventQuery:
    """Which events: one owner's, ``start <= time < end``, and of the given artifacts.

    An event is selected when its ``package_id`` is in ``package_ids`` or its ``pixel_id`` is in
    ``pixel_ids``. For aggregates its *artifact* is its ``package_id`` when that is in
    ``package_ids``, else ``pixel_artifacts[pixel_id]`` (the package a pixel is attached to, or
    the pixel itself), else its ``pixel_id``.
    """

    owner_id: str
    start: datetime  # aware UTC, inclusive
    end: datetime  # aware UTC, exclusive
    package_ids: tuple[str, ...] = ()
    pixel_ids: tuple[str, ...] = ()
    pixel_artifacts: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AggregateRow:
    """One group: ``values`` are the breakdown's columns (see :data:`BREAKDOWNS`), None for
    the unknown value."""

    date: date
    artifact: str
    breakdown: str
    values: tuple[str | None, ...]
    total: int
    total_unique: int


def variable_pair(item: str) -> tuple[str, str]:
    """The (variable, value) of one ``&``-separated item of ``variables``: split on the first
    ``=``, each side decoded by :func:`urllib.parse.unquote_plus`. Both stores decode with this
    function, so they agree on every input, malformed escapes included."""
    variable, _, value = item.partition("=")
    return unquote_plus(variable), unquote_plus(value)


def variable_pairs(variables: str | None) -> list[tuple[str, str]]:
    """Every (variable, value) pair an event's ``variables`` gives, in order (repeats kept)."""
    if not variables:
        return []
    return [variable_pair(item) for item in variables.split("&") if item]


_EXPORT_FIELDS: Final = {
    c.name: pa.field(c.name, ARROW_TYPES[c.type], nullable=c.nullable) for c in COLUMNS
}


def export_schema(columns: Sequence[str]) -> pa.Schema:
    """The Arrow schema of an export of ``columns`` (names of
    :data:`~eventport.events.schema.COLUMNS`, in the order asked). Raises :class:`ValueError`
    for no columns, an unknown one or a repeated one."""
    if not columns:
        raise ValueError("an export needs at least one column")
    unknown = [name for name in columns if name not in _EXPORT_FIELDS]
    if unknown:
        raise ValueError(f"unknown export columns {unknown}")
    if len(set(columns)) != len(columns):
        raise ValueError(f"export columns repeat: {list(columns)}")
    return pa.schema([_EXPORT_FIELDS[name] for name in columns])


def check_aggregate(rollup: str, breakdown: str) -> None:
    """Raise :class:`ValueError` unless ``rollup`` and ``breakdown`` are known."""
    if rollup not in ROLLUPS:
        raise ValueError(f"unknown rollup {rollup!r}; one of {list(ROLLUPS)}")
    if breakdown not in BREAKDOWNS:
        raise ValueError(f"unknown breakdown {breakdown!r}; one of {list(BREAKDOWNS)}")
