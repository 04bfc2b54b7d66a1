"""v2 data export (Scarf's): events as CSV, aggregated counts as NDJSON.

Who may export what follows who may read what: a package's events (its tracking pixels'
included) to whoever may read the package; an owner's to whoever may list the owner's packages
(or pixels), covering the ones they may read. The event store answers an
:class:`~eventport.export.query.EventQuery`; answers stream batch by batch, never whole.

Errors are Scarf's ``PackageEventExportError``, whose ``code`` is one of ``not-found``,
``not-a-pro-member``, ``range-too-long`` and ``invalid-package-query``. Scarf defines no code for
a malformed parameter, so every one (a missing or malformed date, an end not after the start,
an unknown rollup or breakdown, a bad ``extra_columns``, the unsupported ``query``) answers 400
with ``invalid-package-query`` and a message saying what was wrong.

``/v2/packages/{owner}/events`` and ``/aggregates`` (and ``/v2/tracking-pixels/{owner}/events``)
are in :data:`router`, which the app includes before the packages and pixels routers so that
they win over ``/v2/packages/{owner}/{package_id}``. ``/v2/packages/{owner}/{package_id}/events``
is in :data:`package_router`, included after them, so that a package named ``events`` is still
found by type and name (``/v2/packages/{owner}/npm/events``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncGenerator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Final, TypeVar

import anyio
import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy.orm import Session
from starlette.types import Message, Send

from eventport.api.dates import V2_DATES, EndDate, StartDate, documented_dates
from eventport.api.deps import Actor, Db, EscapeFormulas
from eventport.api.errors import documented_as_json
from eventport.control.models import Account, Package, TrackingPixel
from eventport.control.packages import list_owner_packages, owned_package_for, owner_for_listing
from eventport.control.pixels import list_package_pixels, list_pixels, pixel_for
from eventport.domain.access import Access
from eventport.domain.errors import BadRequest, NotFound
from eventport.events.store import EventStore
from eventport.export.csv import CsvLayout, v2_layout
from eventport.export.dates import INVALID, MAX_AGGREGATE_DAYS, MAX_EVENT_DAYS, parse_range
from eventport.export.query import BREAKDOWNS, ROLLUPS, AggregateRow, EventQuery, Rollup

log = logging.getLogger(__name__)
router = APIRouter(tags=["v2 data export"], responses=documented_as_json(503))
package_router = APIRouter(tags=["v2 data export"], responses=documented_as_json(503))
_EVENT_DATES: Final = documented_dates(V2_DATES, MAX_EVENT_DAYS)
_AGGREGATE_DATES: Final = documented_dates(V2_DATES, MAX_AGGREGATE_DAYS)

T = TypeVar("T")

#: Breakdown -> the fields of Scarf's ``Aggregate`` its values go to, in the order of
#: :data:`~eventport.export.query.BREAKDOWNS`. Two are not in Scarf's schema (which allows
#: fields it does not list): ``client_version``, since a by-client row is one client *and
#: version* and unique counts of several versions cannot be added up; and ``referer``.
AGGREGATE_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "by-total": (),
    "by-total-do-not-track": (),
    "by-country": ("country",),
    "by-company": ("company_name", "company_domain"),
    "by-cloudprovider": ("cloud_provider_name", "cloud_provider_domain"),
    "by-platform": ("platform",),
    "by-version": ("version",),
    "by-client": ("client", "client_version"),
    "by-domain": ("domain",),
    "by-referer": ("referer",),
    "by-educational-organization": ("company_name", "company_domain"),
    "by-govermental-organization": ("company_name", "company_domain"),
    "by-variable": ("variable", "value"),
}
ROLLUP_NAMES: Final[dict[str, Rollup]] = {r: r for r in ROLLUPS}
NDJSON: Final = "application/x-ndjson"
CSV: Final = "text/csv; charset=utf-8"


class CsvAnswer(Response):
    """Documents a route's 200 as CSV in the OpenAPI document (the route answers a
    :class:`ClosingStream`, which FastAPI sends as it is)."""

    media_type = CSV


class NdjsonAnswer(Response):
    """Documents a route's 200 as NDJSON (see :class:`CsvAnswer`)."""

    media_type = NDJSON


# --- what a caller may export ----------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """The artifacts of one owner that an export covers, and the names of its packages."""

    owner_id: str
    package_ids: tuple[str, ...] = ()
    pixel_ids: tuple[str, ...] = ()
    pixel_artifacts: Mapping[str, str] = field(default_factory=dict)
    package_names: Mapping[str, str] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.package_ids and not self.pixel_ids

    def query(self, start: datetime, end: datetime) -> EventQuery:
        return EventQuery(
            owner_id=self.owner_id,
            start=start,
            end=end,
            package_ids=self.package_ids,
            pixel_ids=self.pixel_ids,
            pixel_artifacts=dict(self.pixel_artifacts),
        )


def packages_selection(s: Session, owner: Account, packages: Iterable[Package]) -> Selection:
    """The packages and every tracking pixel attached to them, counted as their package."""
    packages = list(packages)
    artifacts = {
        p.id: package.id for package in packages for p in list_package_pixels(s, package.id)
    }
    names = {p.id: p.name for p in packages}
    return Selection(
        owner.id,
        package_ids=tuple(p.id for p in packages),
        pixel_ids=tuple(artifacts),
        pixel_artifacts=artifacts,
        # A pixel's events are its package's: v1's package column names it for them too.
        package_names={**names, **{pixel: names[package] for pixel, package in artifacts.items()}},
    )


def pixels_selection(owner: Account, pixels: Iterable[TrackingPixel]) -> Selection:
    """The pixels, each its own artifact unless attached to a package."""
    pixels = list(pixels)
    return Selection(
        owner.id,
        pixel_ids=tuple(p.id for p in pixels),
        pixel_artifacts={p.id: p.package_id or p.id for p in pixels},
        # An attached pixel's package by its id, and (its events are its package's) by the
        # pixel's: v1's package column names it for them.
        package_names={
            key: p.package.name
            for p in pixels
            if p.package is not None
            for key in (p.package.id, p.id)
        },
    )


def owner_packages(s: Session, actor: Account, owner: str, kind: str | None = None) -> Selection:
    """Every package of ``owner`` the caller may read (and their pixels). 404 when the caller
    may not list the owner's packages, or the owner is not of ``kind`` (user/organization)."""
    account = owner_for_listing(s, actor, owner)
    if kind is not None and account.kind != kind:
        raise NotFound(f"{kind} {owner[:80]!r} not found")
    return packages_selection(s, account, list_owner_packages(s, actor, owner))


def package_or_pixel(
    s: Session, actor: Account, owner: str, artifact_id: str
) -> tuple[Selection, str]:
    """A package of ``owner`` with its pixels, or (as Scarf's spec allows) one tracking pixel;
    and its name."""
    try:
        package = owned_package_for(s, actor, owner, artifact_id, Access.READ)
    except NotFound:
        try:
            pixel = pixel_for(s, actor, owner, artifact_id, Access.READ)
        except NotFound:
            raise NotFound(f"package {artifact_id[:80]!r} of {owner[:80]!r} not found") from None
        return pixels_selection(pixel.owner, [pixel]), pixel.name
    return packages_selection(s, package.owner, [package]), package.name


# --- parameters ------------------------------------------------------------------------------


def event_store(request: Request) -> EventStore:
    events: EventStore = request.app.state.events
    return events


Events = Annotated[EventStore, Depends(event_store)]
Many = Annotated[list[str] | None, Query()]


def reject_query(query: str | None) -> None:
    if query:
        raise BadRequest("the query parameter is not supported by this server", code=INVALID)


def flag(name: str, value: str | None) -> bool:
    if value is None or value.lower() in ("false", "0", ""):
        return False
    if value.lower() in ("true", "1"):
        return True
    raise BadRequest(f"{name} {value[:40]!r} is not a boolean (true or false)", code=INVALID)


def choices(name: str, given: list[str] | None, allowed: Iterable[str], default: str) -> list[str]:
    """The distinct values given, in order, each checked against ``allowed``."""
    allowed = tuple(allowed)
    wanted = list(dict.fromkeys(given or [default]))
    for value in wanted:
        if value not in allowed:
            raise BadRequest(
                f"unknown {name} {value[:40]!r}: one of {', '.join(allowed)}", code=INVALID
            )
    return wanted


# --- streaming -------------------------------------------------------------------------------


# An aggregate's rows fetched before its answer's status goes out: every one of a usual
# aggregate (a year of days by a breakdown of a few hundred values is ~100,000), so that a
# store that runs out of memory in any of its parts (they run side by side) answers 503, not
# a 200 cut short. Past it the rest streams (a larger aggregate is not held whole).
AGGREGATE_ROWS_AHEAD = 200_000


def primed(items: Iterator[T], ahead: int = 1) -> Iterator[T]:
    """``items`` with its first ``ahead`` items fetched now: a store that fails while they are
    fetched fails while the answer can still be an error, not a 200 cut short. The rest stays
    lazy."""
    first: list[T] = []
    try:
        for item in items:
            first.append(item)
            if len(first) >= ahead:
                break
    except BaseException:
        _close(items)
        raise
    return _prepend(first, items)


def _prepend(first: list[T], rest: Iterator[T]) -> Iterator[T]:
    try:
        yield from first
        first.clear()
        yield from rest
    finally:
        _close(rest)


def _close(items: Iterator[Any]) -> None:
    close = getattr(items, "close", None)
    if close is not None:
        close()


async def _from_thread(chunks: Iterator[bytes]) -> AsyncGenerator[bytes, None]:
    """Each chunk computed in a worker thread; the generator closed however the stream ends."""
    try:
        while (chunk := await anyio.to_thread.run_sync(next, chunks, None)) is not None:
            yield chunk
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(_close, chunks)


# How long a chunk of an export may wait for its client to take it (at 100 KB/s, a chunk of
# ~10 MB); past it the export is abandoned and the connection closed.
SEND_TIMEOUT_SECONDS = 120.0


class ClosingStream(StreamingResponse):
    """Streams a sync generator of chunks and closes it when the stream ends, completed or
    not (the client went away): the store's cursor is released at once, not when the garbage
    collector gets to it."""

    def __init__(self, chunks: Iterator[bytes], media_type: str, **kwargs: Any) -> None:
        self._body = _from_thread(chunks)
        super().__init__(self._body, media_type=media_type, **kwargs)

    async def stream_response(self, send: Send) -> None:
        async def send_in_time(message: Message) -> None:
            # A client that stops reading would hold the store's snapshot (and, embedded,
            # its turn for reads) for as long as it kept the connection open.
            with anyio.fail_after(SEND_TIMEOUT_SECONDS):
                await send(message)

        try:
            await super().stream_response(send_in_time)
        except TimeoutError:
            log.warning(
                "an export's client read nothing for %.0f s: the export was abandoned",
                SEND_TIMEOUT_SECONDS,
            )
        finally:
            await self._body.aclose()


def attachment(filename: str) -> dict[str, str]:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", filename)[:200]
    return {"Content-Disposition": f'attachment; filename="{safe}"'}


def events_csv(
    events: EventStore,
    selections: Iterable[Selection],
    start: datetime,
    end: datetime,
    layout: CsvLayout,
    filename: str,
) -> ClosingStream:
    """The selections' events as one CSV file (one header), streamed."""
    selections = [s for s in selections if not s.empty]
    names = {k: v for s in selections for k, v in s.package_names.items()}

    def lines() -> Iterator[bytes]:
        for selection in selections:
            yield from events.export_csv(selection.query(start, end), layout, names)

    def chunks() -> Iterator[bytes]:
        yield layout.header_line
        yield from primed_lines

    primed_lines = primed(lines())
    return ClosingStream(chunks(), CSV, headers=attachment(filename))


def ndjson(lines: Iterable[dict[str, Any]], lines_per_chunk: int = 1000) -> Iterator[bytes]:
    buffered: list[bytes] = []
    for line in lines:
        buffered.append(orjson.dumps(line))
        if len(buffered) >= lines_per_chunk:
            yield b"\n".join(buffered) + b"\n"
            buffered.clear()
    if buffered:
        yield b"\n".join(buffered) + b"\n"


def aggregate_rows(
    events: EventStore, query: EventQuery, rollups: Iterable[Rollup], breakdowns: Iterable[str]
) -> Iterator[tuple[Rollup, AggregateRow]]:
    yield from events.aggregates(query, [(r, b) for r in rollups for b in breakdowns])


def aggregate_line(rollup: str, row: AggregateRow) -> dict[str, Any]:
    """Scarf's ``Aggregate``; a field whose value is unknown is left out (the schema's fields
    are non-nullable strings)."""
    line: dict[str, Any] = {
        "date": row.date.isoformat(),
        "artifact": row.artifact,
        "rollup": rollup,
        "breakdown": row.breakdown,
    }
    for name, value in zip(AGGREGATE_FIELDS[row.breakdown], row.values, strict=True):
        if value is not None:
            line[name] = value
    line["total"] = row.total
    line["total_unique"] = row.total_unique
    return line


# --- routes ----------------------------------------------------------------------------------


@router.get("/v2/packages/{owner}/events", openapi_extra=_EVENT_DATES, response_class=CsvAnswer)
def export_owner_package_events(
    owner: str,
    db: Db,
    actor: Actor,
    events: Events,
    escape: EscapeFormulas,
    start_date: StartDate = None,
    end_date: EndDate = None,
    query: str | None = None,
    extra_columns: str | None = None,
) -> StreamingResponse:
    """Events of every package of the owner the caller may read, their pixels' included, as
    CSV. ``extra_columns=true`` appends eventport's own columns to Scarf's."""
    start, end = parse_range(start_date, end_date, max_days=MAX_EVENT_DAYS)
    reject_query(query)
    layout = v2_layout(extra_columns=flag("extra_columns", extra_columns), escape_formulas=escape)
    with db.session() as s:
        selection = owner_packages(s, actor, owner)
    name = f"{owner}-packages-{start_date}-{end_date}.csv"
    return events_csv(events, [selection], start, end, layout, name)


@router.get(
    "/v2/packages/{owner}/aggregates",
    openapi_extra=_AGGREGATE_DATES,
    response_class=NdjsonAnswer,
)
def export_aggregates(
    owner: str,
    db: Db,
    actor: Actor,
    events: Events,
    start_date: StartDate = None,
    end_date: EndDate = None,
    query: str | None = None,
    rollup: Many = None,
    breakdown: Many = None,
) -> StreamingResponse:
    """Counts of the events of every package of the owner the caller may read (a pixel's count
    as its package's), as NDJSON of Scarf's ``Aggregate``: for each rollup (default daily),
    each breakdown (default by-total), one line per period, package and breakdown value."""
    start, end = parse_range(start_date, end_date, max_days=MAX_AGGREGATE_DAYS)
    reject_query(query)
    rollups = [ROLLUP_NAMES[r] for r in choices("rollup", rollup, ROLLUPS, "daily")]
    breakdowns = choices("breakdown", breakdown, BREAKDOWNS, "by-total")
    with db.session() as s:
        selection = owner_packages(s, actor, owner)
    rows: Iterator[tuple[Rollup, AggregateRow]] = iter(())
    if not selection.empty:
        rows = primed(
            aggregate_rows(events, selection.query(start, end), rollups, breakdowns),
            AGGREGATE_ROWS_AHEAD,
        )
    return ClosingStream(ndjson(aggregate_line(*pair) for pair in rows), NDJSON)


@router.get(
    "/v2/tracking-pixels/{owner}/events", openapi_extra=_EVENT_DATES, response_class=CsvAnswer
)
def export_owner_pixel_events(
    owner: str,
    db: Db,
    actor: Actor,
    events: Events,
    escape: EscapeFormulas,
    start_date: StartDate = None,
    end_date: EndDate = None,
    extra_columns: str | None = None,
) -> StreamingResponse:
    """Events of every tracking pixel of the owner the caller may read, as CSV."""
    start, end = parse_range(start_date, end_date, max_days=MAX_EVENT_DAYS)
    layout = v2_layout(extra_columns=flag("extra_columns", extra_columns), escape_formulas=escape)
    with db.session() as s:
        account = owner_for_listing(s, actor, owner)
        selection = pixels_selection(account, list_pixels(s, actor, owner))
    name = f"{owner}-tracking-pixels-{start_date}-{end_date}.csv"
    return events_csv(events, [selection], start, end, layout, name)


@package_router.get(
    "/v2/packages/{owner}/{package_id}/events",
    openapi_extra=_EVENT_DATES,
    response_class=CsvAnswer,
)
def export_package_events(
    owner: str,
    package_id: str,
    db: Db,
    actor: Actor,
    events: Events,
    escape: EscapeFormulas,
    start_date: StartDate = None,
    end_date: EndDate = None,
    extra_columns: str | None = None,
) -> StreamingResponse:
    """Events of one package, its tracking pixels' included (or of one tracking pixel), as
    CSV."""
    start, end = parse_range(start_date, end_date, max_days=MAX_EVENT_DAYS)
    layout = v2_layout(extra_columns=flag("extra_columns", extra_columns), escape_formulas=escape)
    with db.session() as s:
        selection, label = package_or_pixel(s, actor, owner, package_id)
    name = f"{owner}-{label}-{start_date}-{end_date}.csv"
    return events_csv(events, [selection], start, end, layout, name)
