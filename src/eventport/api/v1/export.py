"""v1 data export (Scarf's v1): aggregates as NDJSON of AggregateV1, events as CSV.

The same selections and streams as v2 (:mod:`eventport.api.v2.export`), with v1's parameter
names (``startDate``/``endDate``), field names and CSV columns. The app includes this router
before the v1 packages router, whose ``/api/v1/packages/{package_ref:path}`` takes any path.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any, Final

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from eventport.api.dates import V1_DATES, V1EndDate, V1StartDate, documented_dates
from eventport.api.deps import Actor, Db, EscapeFormulas
from eventport.api.errors import documented_as_json
from eventport.api.v2.export import (
    AGGREGATE_ROWS_AHEAD,
    NDJSON,
    ClosingStream,
    CsvAnswer,
    Events,
    NdjsonAnswer,
    Selection,
    events_csv,
    ndjson,
    owner_packages,
    packages_selection,
    pixels_selection,
    primed,
)
from eventport.control.accounts import organizations_of
from eventport.control.models import Account
from eventport.control.packages import list_visible_packages, package_for
from eventport.control.pixels import list_pixels
from eventport.domain.access import Access
from eventport.export.csv import v1_layout
from eventport.export.dates import MAX_AGGREGATE_DAYS, MAX_EVENT_DAYS, parse_range
from eventport.export.query import AggregateRow, Rollup

router = APIRouter(prefix="/api/v1", tags=["v1 data export"], responses=documented_as_json(503))

_AGGREGATE_DATES: Final = documented_dates(V1_DATES, MAX_AGGREGATE_DAYS)
_EVENT_DATES: Final = documented_dates(V1_DATES, MAX_EVENT_DAYS)

#: AggregateV1 breakdown -> the store's breakdown and the fields its values go to.
V1_BREAKDOWNS: Final[dict[str, tuple[str, tuple[str, ...]]]] = {
    "company": ("by-company", ("company_name", "company_domain")),
    "cloud_provider": ("by-cloudprovider", ("cloud_provider_name", "cloud_provider_domain")),
    "country": ("by-country", ("country",)),
    "platform": ("by-platform", ("platform",)),
    "version": ("by-version", ("version",)),
    "client": ("by-client", ("client", "client_version")),
    "variable": ("by-variable", ("variable", "value")),
    "total": ("by-total", ()),
}


def aggregate_v1(name: str, row: AggregateRow) -> dict[str, Any]:
    """One AggregateV1 line; unknown values are left out, ``unique_total`` is on totals only."""
    line: dict[str, Any] = {
        "breakdown": name,
        "date": row.date.isoformat(),
        "package": row.artifact,
    }
    for field, value in zip(V1_BREAKDOWNS[name][1], row.values, strict=True):
        if value is not None:
            line[field] = value
    line["total"] = row.total
    if name == "total":
        line["unique_total"] = row.total_unique
    return line


def _aggregates(
    db: Db,
    actor: Actor,
    events: Events,
    owner: str,
    kind: str,
    start_date: str | None,
    end_date: str | None,
) -> StreamingResponse:
    """Daily counts of every package of the ``kind`` account ``owner`` the caller may read."""
    start, end = parse_range(start_date, end_date, max_days=MAX_AGGREGATE_DAYS, names=V1_DATES)
    with db.session() as s:
        selection = owner_packages(s, actor, owner, kind=kind)
    query = selection.query(start, end)

    def lines() -> Iterator[dict[str, Any]]:
        if selection.empty:
            return
        kinds: list[tuple[Rollup, str]] = [("daily", b) for b, _ in V1_BREAKDOWNS.values()]
        names = {breakdown: name for name, (breakdown, _) in V1_BREAKDOWNS.items()}
        for _, row in events.aggregates(query, kinds):  # one snapshot for every breakdown
            yield aggregate_v1(names[row.breakdown], row)

    return ClosingStream(ndjson(primed(lines(), AGGREGATE_ROWS_AHEAD)), NDJSON)


@router.get(
    "/organizations/{organization_name}/aggregates",
    openapi_extra=_AGGREGATE_DATES,
    response_class=NdjsonAnswer,
)
def organization_aggregates(
    organization_name: str,
    db: Db,
    actor: Actor,
    events: Events,
    start_date: V1StartDate = None,
    end_date: V1EndDate = None,
) -> StreamingResponse:
    """Daily counts of every package of the organization the caller may read."""
    return _aggregates(db, actor, events, organization_name, "organization", start_date, end_date)


@router.get(
    "/users/{username}/aggregates", openapi_extra=_AGGREGATE_DATES, response_class=NdjsonAnswer
)
def user_aggregates(
    username: str,
    db: Db,
    actor: Actor,
    events: Events,
    start_date: V1StartDate = None,
    end_date: V1EndDate = None,
) -> StreamingResponse:
    """Daily counts of every package of the user the caller may read."""
    return _aggregates(db, actor, events, username, "user", start_date, end_date)


@router.get(
    "/packages/{package_id}/events/{filename}.csv",
    openapi_extra=_EVENT_DATES,
    response_class=CsvAnswer,
)
def package_events(
    package_id: str,
    filename: str,
    db: Db,
    actor: Actor,
    events: Events,
    escape: EscapeFormulas,
    start_date: V1StartDate = None,
    end_date: V1EndDate = None,
) -> StreamingResponse:
    """Events of the package and of its tracking pixels; ``filename`` only names the file."""
    start, end = parse_range(start_date, end_date, max_days=MAX_EVENT_DAYS, names=V1_DATES)
    with db.session() as s:
        package = package_for(s, actor, package_id, Access.READ)
        selection = packages_selection(s, package.owner, [package])
    return events_csv(
        events, [selection], start, end, v1_layout(escape_formulas=escape), f"{filename}.csv"
    )


@router.get("/pixels/events/{filename}.csv", openapi_extra=_EVENT_DATES, response_class=CsvAnswer)
def pixel_events(
    filename: str,
    db: Db,
    actor: Actor,
    events: Events,
    escape: EscapeFormulas,
    start_date: V1StartDate = None,
    end_date: V1EndDate = None,
) -> StreamingResponse:
    """Events of every tracking pixel the caller may read, of any owner."""
    start, end = parse_range(start_date, end_date, max_days=MAX_EVENT_DAYS, names=V1_DATES)
    with db.session() as s:
        selections = visible_pixels(s, actor)
    return events_csv(
        events, selections, start, end, v1_layout(escape_formulas=escape), f"{filename}.csv"
    )


def visible_pixels(s: Session, actor: Account) -> list[Selection]:
    """Per owner, the pixels the caller may read: in their own namespace, their
    organizations', and those of owners where they hold a package grant."""
    packages = list_visible_packages(s, actor)
    owners = {actor.name: actor}
    memberships = organizations_of(s, actor, actor.name)
    owners.update((m.organization.name, m.organization) for m in memberships)
    owners.update((p.owner.name, p.owner) for p in packages)
    names = {p.id: p.name for p in packages}
    selections = []
    for name, owner in sorted(owners.items()):
        selection = pixels_selection(owner, list_pixels(s, actor, name))
        selections.append(replace(selection, package_names={**names, **selection.package_names}))
    return selections
