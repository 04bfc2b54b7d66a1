"""v2 bulk import: upload streams to a spool file; workers do the rest (Scarf's import API)."""

from __future__ import annotations

import contextlib
import itertools
import logging
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from eventport.api.deps import Actor, Db
from eventport.api.errors import (
    COMMON_ERRORS,
    InsufficientStorage,
    PayloadTooLarge,
    SpoolUnavailable,
    UnsupportedMediaType,
    documented,
    documented_as_json,
)
from eventport.api.pagination import After, PerPage, page
from eventport.api.v2.export import NdjsonAnswer
from eventport.api.v2.shapes import timestamp
from eventport.control import imports as store
from eventport.control.database import ControlDatabase
from eventport.control.models import Account, Import, clock_now
from eventport.control.packages import (
    owned_package_for,
    owner_for_listing,
    writes_some_artifact,
)
from eventport.control.pixels import pixel_for
from eventport.domain.access import Access
from eventport.domain.errors import BadRequest, Forbidden, NotFound, no_room
from eventport.imports import log_lines
from eventport.settings import Settings

log = logging.getLogger(__name__)
router = APIRouter(tags=["v2 event import"])

FORMATS = {
    "application/x-ndjson": "ndjson",
    "application/ndjson": "ndjson",
    "application/json": "ndjson",
    "text/csv": "csv",
}
ENCODINGS = {"": "identity", "identity": "identity", "gzip": "gzip", "x-gzip": "gzip"}
# What the upload routes document: the body (read as a stream, so FastAPI cannot see it) in each
# format they take, and the errors only an upload can meet.
_UPLOAD: dict[str, Any] = {
    "openapi_extra": {
        "requestBody": {
            "required": True,
            "description": "Events: NDJSON (a JSON object a line) or CSV (a header row of field "
            "names), optionally with Content-Encoding: gzip.",
            "content": {
                media: {"schema": {"type": "string", "format": "binary"}} for media in FORMATS
            },
        }
    },
    "responses": documented(415, 507),
}
PUBLIC_STATUS = {"waiting": "importing", "running": "importing"}
StatusFilter = Literal["importing", "done", "aborted", "failed"]
# Authorizes an import's target: (owner account, package id, pixel id).
Resolve = Callable[[Session], tuple[Account, str | None, str | None]]


# Content-Type parameters that change how the body would have to be read: only UTF-8 text with
# a header row is read (RFC 4180's header=absent would make the first row events).
_READABLE_PARAMETERS = {"charset": {"utf-8", "utf8", "us-ascii"}, "header": {"present"}}


def _header(request: Request, name: str) -> str:
    """A header's value, all of its lines joined as one list (RFC 9110 5.3): a second
    Content-Encoding line is a second coding, not one to overlook."""
    return ", ".join(request.headers.getlist(name))


def _format_of(request: Request) -> tuple[str, str]:
    types = request.headers.getlist("content-type")
    if len(set(types)) > 1:
        raise UnsupportedMediaType(
            f"the upload has {len(types)} different Content-Type headers: send one"
        )
    media, *parameters = (types[0] if types else "").split(";")
    media = media.strip().lower()
    if media not in FORMATS:
        raise UnsupportedMediaType(
            f"unsupported Content-Type {media[:80]!r}: send application/x-ndjson, "
            "application/ndjson, application/json or text/csv"
        )
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        name, value = name.strip().lower(), value.strip().strip('"').lower()
        if name in _READABLE_PARAMETERS and value not in _READABLE_PARAMETERS[name]:
            raise UnsupportedMediaType(
                f"unsupported Content-Type parameter {name}={value[:40]!r}: uploads are read as "
                "UTF-8" + (" with a header row" if media == "text/csv" else "")
            )
    # A transfer coding besides chunked would leave the body still coded (the server undoes
    # only the chunking): gzip is sent as Content-Encoding.
    transfer = _header(request, "transfer-encoding").replace(" ", "").lower()
    if transfer not in ("", "chunked"):
        raise UnsupportedMediaType(
            f"unsupported Transfer-Encoding {transfer[:80]!r}: send chunked or nothing, and a "
            "compressed body with Content-Encoding: gzip"
        )
    encoding = _header(request, "content-encoding").strip().lower()
    if encoding not in ENCODINGS:
        raise UnsupportedMediaType(
            f"unsupported Content-Encoding {encoding[:80]!r}: send gzip or nothing"
        )
    return FORMATS[media], ENCODINGS[encoding]


async def _spool(request: Request, path: Path, limit: int) -> int:
    """Stream the body to disk as it arrives: never whole in memory, capped at ``limit``."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the upload is larger than the limit of {limit} bytes")
    size = 0
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as spool:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"the upload is larger than the limit of {limit} bytes")
                spool.write(chunk)
    except ClientDisconnect:
        # The client went away mid-upload: nothing is kept, and no one is left to answer (an
        # error, with two tracebacks, in the log before).
        log.info("an upload was cut off by its client after %d bytes; nothing was kept", size)
        raise BadRequest(
            f"the upload was cut off after {size} bytes; nothing was imported",
            code="upload-incomplete",
        ) from None
    except OSError as exc:
        if (words := no_room(exc)) is None:
            log.error("cannot write an upload to %s: %s", path, exc)
            raise SpoolUnavailable(
                f"the server cannot store uploads ({exc.strerror or exc}); nothing was "
                "imported: its operator must make the data directory's spool writable"
            ) from exc
        raise InsufficientStorage(
            f"the server has no room to store the upload ({words}, after {size} bytes); "
            "nothing was imported: try again once there is room"
        ) from exc
    return size


async def _start_import(
    request: Request,
    db: ControlDatabase,
    actor: Account,
    owner: str,
    target: str,
    resolve: Resolve,
) -> dict[str, Any]:
    settings: Settings = request.app.state.settings
    receiving: store.Receiving = request.app.state.receiving
    fmt, compression = _format_of(request)

    def authorize() -> tuple[Account, str | None, str | None]:
        with db.session() as s:
            account, package_id, pixel_id = resolve(s)
            receiving.admit(s, account.id, settings.max_active_imports)
            return account, package_id, pixel_id

    account, package_id, pixel_id = await run_in_threadpool(authorize)
    import_id = str(uuid.uuid4())
    path = settings.spool_dir / f"{import_id}.upload"
    try:
        size = await _spool(request, path, settings.max_import_bytes)
        new = store.NewImport(
            import_id, account, target, package_id, pixel_id, fmt, compression, str(path), size
        )

        def create() -> dict[str, Any]:
            with db.session() as s:
                return event_import(
                    s, store.create_import(s, actor, new, settings.max_active_imports)
                )

        body = await run_in_threadpool(create)
    except BaseException:
        with contextlib.suppress(OSError):  # (a spool that is no directory: said above)
            path.unlink(missing_ok=True)
        raise
    finally:
        receiving.done(account.id)
    wake = getattr(request.app.state, "wake_workers", None)
    if wake is not None:
        wake()
    return body


@router.post("/v2/packages/{owner}/{package_id}/import", **_UPLOAD)
async def import_package_events(
    owner: str, package_id: str, request: Request, db: Db, actor: Actor
) -> dict[str, Any]:
    def resolve(s: Session) -> tuple[Account, str | None, str | None]:
        package = owned_package_for(s, actor, owner, package_id, Access.ADMIN)
        return package.owner, package.id, None

    return await _start_import(request, db, actor, owner, "package", resolve)


@router.post("/v2/tracking-pixels/{owner}/{tracking_pixel_id}/import", **_UPLOAD)
async def import_tracking_pixel_events(
    owner: str, tracking_pixel_id: str, request: Request, db: Db, actor: Actor
) -> dict[str, Any]:
    def resolve(s: Session) -> tuple[Account, str | None, str | None]:
        pixel = pixel_for(s, actor, owner, tracking_pixel_id, Access.ADMIN)
        return pixel.owner, None, pixel.id

    return await _start_import(request, db, actor, owner, "pixel", resolve)


@router.post("/v2/{owner}/import", **_UPLOAD)
async def import_events(owner: str, request: Request, db: Db, actor: Actor) -> dict[str, Any]:
    """Each line names its ``$package`` and/or ``$tracking_pixel`` (or ``$pixel``)."""

    def resolve(s: Session) -> tuple[Account, str | None, str | None]:
        account = owner_for_listing(s, actor, owner)
        # Those who may write nothing there may not queue imports in the owner's name (they
        # would hold its places among the active imports, and every line would fail).
        if not writes_some_artifact(s, actor, account):
            raise Forbidden(f"you may not import into any package or tracking pixel of {owner!r}")
        return account, None, None

    return await _start_import(request, db, actor, owner, "multi", resolve)


# The routes whose bodies stream to the spool, exempt from the management body cap.
UPLOADS: frozenset[Callable[..., Any]] = frozenset(
    {import_package_events, import_tracking_pixel_events, import_events}
)


@router.get("/v2/imports/{owner}")
def list_imports(
    owner: str,
    db: Db,
    actor: Actor,
    status: Annotated[list[StatusFilter] | None, Query()] = None,
    after: After = None,
    per_page: PerPage = None,
) -> dict[str, Any]:
    states: list[str] = []
    for wanted in status or []:
        states.extend(["waiting", "running"] if wanted == "importing" else [wanted])
    with db.session() as s:
        rows = store.list_imports(s, actor, owner, states or None)

        def newer_first(cursor: str) -> Callable[[Import], bool] | None:
            # The import the cursor names, if the status filter now leaves it out.
            try:
                seen = store.import_for(s, actor, owner, cursor)
            except (NotFound, BadRequest):
                return None
            return lambda row: (row.created_at, row.id) < (seen.created_at, seen.id)

        chunk, _ = page(rows, after, per_page, lambda row: (row.id,), newer_first)
        now = clock_now(s) if any(map(_running_since_start, chunk)) else None  # asked once
        return {"event_imports": [event_import(s, row, now) for row in chunk]}


@router.get("/v2/imports/{owner}/{event_import_id}")
def get_import(owner: str, event_import_id: str, db: Db, actor: Actor) -> dict[str, Any]:
    with db.session() as s:
        return event_import(s, store.import_for(s, actor, owner, event_import_id))


@router.get(
    "/v2/imports/{owner}/{event_import_id}/log",
    response_class=NdjsonAnswer,
    responses=documented_as_json(*COMMON_ERRORS),
)
def get_import_log(owner: str, event_import_id: str, db: Db, actor: Actor) -> StreamingResponse:
    """Every log entry, streamed as NDJSON page by page (never the whole log in memory)."""
    with db.session() as s:
        import_id = store.import_for(s, actor, owner, event_import_id).id

    def lines() -> Iterator[bytes]:
        entries = log_lines.log_entries(db.session, import_id)
        while page := list(itertools.islice(entries, 10_000)):
            yield b"".join(orjson.dumps(log_entry(e)) + b"\n" for e in page)

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.post("/v2/imports/{owner}/{event_import_id}/abort", status_code=204)
def abort_import(owner: str, event_import_id: str, db: Db, actor: Actor) -> Response:
    with db.session() as s:
        row, unclaimed = store.request_abort(s, actor, owner, event_import_id)
        spool = Path(row.spool_path)
    if unclaimed:  # no worker ever had it, so none will delete its upload (raw IPs and all)
        spool.unlink(missing_ok=True)
    return Response(status_code=204)


# --- shapes ----------------------------------------------------------------------------------


def log_entry(entry: Sequence[Any]) -> dict[str, Any]:
    """An entry as Scarf's ImportLog (its values unpacked in order: a row's names cost more
    than the rest of the entry)."""
    line, level, type_, code, message, package_id, pixel_id, events, failed = entry
    body: dict[str, Any] = {
        "type": type_,
        "class": level,
        "code": code,
        "human_friendly_message": message,
    }
    if line:
        body["line"] = line
    if package_id is not None:
        body["package_id"] = package_id
    if pixel_id is not None:
        body["tracking_pixel_id"] = pixel_id
    if events is not None:
        body["events_count"] = events
    if failed is not None:
        body["failed_events_count"] = failed
    return body


def _running_since_start(row: Import) -> bool:
    """Started and not finished: its elapsed time runs to now."""
    return row.started_at is not None and row.finished_at is None


def _seconds(s: Session, row: Import, now: datetime | None) -> float | None:
    """From the import's start to its end, or to ``now`` (asked of the clock that stamped its
    times when not given: the database's, on PostgreSQL, where an API host whose clock was
    5 s behind showed 1e11 events/s)."""
    if row.started_at is None:
        return None
    end = row.finished_at or now or clock_now(s)
    return max(end - row.started_at, timedelta(microseconds=1)).total_seconds()


def event_import(s: Session, row: Import, now: datetime | None = None) -> dict[str, Any]:
    """Scarf's EventImport, plus progress, rate and ETA (a running import's measured to
    ``now``, see :func:`_seconds`)."""
    elapsed = _seconds(s, row, now)
    finished = row.state in store.FINAL
    rate = round(row.events_total / elapsed, 1) if elapsed else None
    eta: float | None = None
    if row.state == "running" and elapsed and row.bytes_processed:
        remaining = max(row.bytes_total - row.bytes_processed, 0)
        eta = round(remaining * elapsed / row.bytes_processed, 1)
    percent = (
        100.0
        if row.state == "done"
        else (round(100.0 * row.bytes_processed / row.bytes_total, 1) if row.bytes_total else 0.0)
    )
    body: dict[str, Any] = {
        "id": row.id,
        "owner": row.owner.name,
        "status": PUBLIC_STATUS.get(row.state, row.state),
        "state": row.state,
        "events_total": row.events_total,
        "events_successfully_imported": row.events_imported,
        "events_failed_to_import": row.events_failed,
        "warnings_total": row.warnings,
        "events_excluded": row.excluded,
        "events_do_not_track": row.do_not_track,
        "error_log_sample": [log_entry(e) for e in log_lines.log_sample(s, row.id, "error")],
        "warning_log_sample": [log_entry(e) for e in log_lines.log_sample(s, row.id, "warning")],
        "created_at": timestamp(row.created_at),
        "updated_at": timestamp(row.updated_at),
        "bytes_total": row.bytes_total,
        "bytes_processed": row.bytes_processed,
        "lines_processed": row.lines_processed,
        "percent_complete": percent,
        "events_per_second": rate,
        "eta_seconds": 0.0 if finished else eta,
        "started_at": timestamp(row.started_at) if row.started_at else None,
        "finished_at": timestamp(row.finished_at) if row.finished_at else None,
    }
    if row.state == "failed":
        body["failure_reason"] = row.failure_reason
    return body
