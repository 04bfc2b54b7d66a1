"""Imports in the control store: creation under a limit, visibility, leases, progress, logs."""

from __future__ import annotations

import itertools
import sqlite3
import threading
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, timedelta
from typing import Any

import orjson
from sqlalchemy import Row, Select, case, delete, exists, func, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, aliased

from eventport.control.accounts import hold_account, namespace_access
from eventport.control.models import (
    Account,
    Import,
    ImportLog,
    ImportLogRun,
    Package,
    TrackingPixel,
    clock,
    utcnow,
)
from eventport.control.packages import access_to, owner_for_listing, parse_uuid, sees_owner
from eventport.control.pixels import access_to_pixel
from eventport.domain.access import Access
from eventport.domain.errors import InvalidInput, NotFound
from eventport.domain.text import without_nul

ACTIVE = ("waiting", "running")
FINAL = ("done", "aborted", "failed")
LOG_SAMPLE = 10


@dataclass(frozen=True)
class NewImport:
    id: str
    owner: Account
    target: str  # package | pixel | multi
    package_id: str | None
    pixel_id: str | None
    format: str
    compression: str
    spool_path: str
    bytes_total: int


def active_count(session: Session, owner_id: str) -> int:
    return (
        session.scalar(
            select(func.count()).where(Import.owner_id == owner_id, Import.state.in_(ACTIVE))
        )
        or 0
    )


def ensure_capacity(session: Session, owner_id: str, limit: int) -> None:
    if active_count(session, owner_id) >= limit:
        raise InvalidInput("too many active imports", code="too-many-active-imports")


class Receiving:
    """The uploads this process is receiving, by owner: each counts against its owner's
    active imports from before its first byte is read. Counted only once their imports were
    made, uploads at once past the limit were all admitted, spooled whole, and then refused
    (25 at once against 15: ten bodies written for nothing; a resource hunt). Uploads another
    process receives (PostgreSQL) count once their imports are made."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count: Counter[str] = Counter()

    def admit(self, session: Session, owner_id: str, limit: int) -> None:
        """Count one more upload of ``owner_id``, or refuse it as :func:`ensure_capacity`
        does when the owner's active imports and uploads being received reach ``limit``."""
        with self._lock:
            ensure_capacity(session, owner_id, limit - self._count[owner_id])
            self._count[owner_id] += 1

    def done(self, owner_id: str) -> None:
        """An admitted upload was received (its import made) or given up."""
        with self._lock:
            self._count[owner_id] -= 1
            if self._count[owner_id] <= 0:
                del self._count[owner_id]


def create_import(session: Session, actor: Account, new: NewImport, limit: int) -> Import:
    hold_account(session, new.owner.id)  # uploads that end at once are counted one by one
    ensure_capacity(session, new.owner.id, limit)
    row = Import(
        id=new.id,
        owner_id=new.owner.id,
        created_by=actor.id,
        target=new.target,
        package_id=new.package_id,
        pixel_id=new.pixel_id,
        format=new.format,
        compression=new.compression,
        spool_path=new.spool_path,
        bytes_total=new.bytes_total,
        created_at=clock(session),
        updated_at=clock(session),
    )
    session.add(row)
    session.flush()
    session.refresh(row)
    return row


def _can_see(session: Session, actor: Account, row: Import) -> bool:
    """The owner's admins see every import; its starter theirs, while they may still see the
    owner (not once removed from the organization or stripped of their grants: as the list)
    and the import's package or pixel (not once blocked on it: its log names the events it
    holds; one deleted since leaves the import to say why it failed)."""
    if namespace_access(session, actor, row.owner) >= Access.ADMIN:
        return True
    return (
        row.created_by == actor.id
        and sees_owner(session, actor, row.owner)
        and _sees_target(session, actor, row)
    )


def _sees_target(session: Session, actor: Account, row: Import) -> bool:
    """Whether ``actor`` may read the import's package or pixel (or it is gone)."""
    if row.target == "package" and row.package_id is not None:
        package = session.get(Package, row.package_id)
        return package is None or access_to(session, actor, package) >= Access.READ
    if row.target == "pixel" and row.pixel_id is not None:
        pixel = session.get(TrackingPixel, row.pixel_id)
        return pixel is None or access_to_pixel(session, actor, pixel) >= Access.READ
    return True


def import_for(session: Session, actor: Account, owner: str, import_id: str) -> Import:
    row = session.get(Import, parse_uuid(import_id, "import"))
    if row is None or row.owner.name != owner or not _can_see(session, actor, row):
        raise NotFound(f"import {import_id[:80]!r} not found")
    return row


def list_imports(
    session: Session,
    actor: Account,
    owner: str,
    states: Sequence[str] | None,
) -> list[Import]:
    """Newest first. An owner's admins see every import; others see the ones they started."""
    account = owner_for_listing(session, actor, owner)
    query = select(Import).where(Import.owner_id == account.id)
    admin = namespace_access(session, actor, account) >= Access.ADMIN
    if not admin:
        query = query.where(Import.created_by == actor.id)
    if states:
        query = query.where(Import.state.in_(states))
    rows = session.scalars(query.order_by(Import.created_at.desc(), Import.id.desc()))
    # (the rest of _can_see is the query's and owner_for_listing's)
    return list(rows) if admin else [row for row in rows if _sees_target(session, actor, row)]


def request_abort(
    session: Session, actor: Account, owner: str, import_id: str
) -> tuple[Import, bool]:
    """A waiting import is aborted at once; a running one when its worker next looks (< 1 s),
    or, if it ends first, as it ends (see :func:`finish`). The import, and whether it was
    aborted at once (then no worker holds it, nor ever will: its upload is the caller's to
    delete).

    Each change is a compare-and-set UPDATE: a worker that claimed the import after it was
    read (the row said waiting) keeps it, and is told to stop. Written from the row read,
    the claim was overwritten: the import ended aborted while its worker read the upload the
    caller then deleted (an import-lifecycle hunt: 9 of 60 races on PostgreSQL)."""
    row = import_for(session, actor, owner, import_id)  # its starter or the owner's admins
    if row.state in FINAL:
        return row, False
    now = clock(session)
    at_once = session.execute(
        update(Import)
        .where(Import.id == row.id, Import.state == "waiting")
        .values(abort_requested=True, state="aborted", finished_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    if not at_once:
        session.execute(
            update(Import)
            .where(Import.id == row.id, Import.state.not_in(FINAL))
            .values(abort_requested=True, updated_at=now)
            .execution_options(synchronize_session=False)
        )
    session.refresh(row)
    return row, bool(at_once)


# --- workers ---------------------------------------------------------------------------------


def claim_next(
    session: Session, worker: str, lease: timedelta, skip: Collection[str] = ()
) -> Import | None:
    """Take the oldest waiting import, or a running one whose worker stopped renewing its lease,
    of an owner none of whose older imports is waiting or running.

    One owner's imports run one at a time, in the order they were uploaded (different owners'
    at once). A later upload's events then replace an earlier one's of the same ``$unique_id``
    and are warned about (``duplicate-unique-id``), as the import engine promises. Run side
    by side, two imports each looked up the stored ids before the other had written its own:
    the events were still stored once each (the stores delete what a batch replaces when they
    write it), but the warnings were lost and which import's event stayed was left to chance.

    The claim is a compare-and-set UPDATE, so two workers never hold the same import, on
    SQLite and PostgreSQL alike. Imports in ``skip`` are left to other workers.
    """
    now = clock(session)
    older = aliased(Import)
    first_of_its_owner = ~exists().where(
        older.owner_id == Import.owner_id,
        older.state.in_(ACTIVE),
        (older.created_at < Import.created_at)
        | ((older.created_at == Import.created_at) & (older.id < Import.id)),
    )
    claimable = (
        (Import.state == "waiting")
        | ((Import.state == "running") & (Import.lease_expires_at < now))
    ) & first_of_its_owner
    if skip:
        claimable = claimable & Import.id.not_in(list(skip))
    candidates = session.scalars(
        select(Import.id).where(claimable).order_by(Import.created_at, Import.id).limit(5)
    ).all()
    for candidate in candidates:
        result = session.execute(
            update(Import)
            .where(Import.id == candidate, claimable)
            .values(
                state="running",
                lease_owner=worker,
                lease_expires_at=now + lease,
                attempts=Import.attempts + 1,
                started_at=func.coalesce(Import.started_at, now),
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            return session.get(Import, candidate, populate_existing=True)
    return None


def renew_lease(session: Session, import_id: str, worker: str, lease: timedelta) -> bool:
    """Extend the lease; False when it was lost (another worker took over) or abort was asked."""
    result = session.execute(
        update(Import)
        .where(Import.id == import_id, Import.lease_owner == worker, Import.state == "running")
        .values(lease_expires_at=clock(session) + lease)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    return not session.scalar(select(Import.abort_requested).where(Import.id == import_id))


def release(session: Session, import_id: str, worker: str, *, failed: bool = False) -> None:
    """Hand a running import back so the next worker resumes it at once: on shutdown (not an
    attempt that failed: it is not counted), or ``failed`` (counted)."""
    session.execute(
        update(Import)
        .where(Import.id == import_id, Import.lease_owner == worker, Import.state == "running")
        .values(
            state="waiting",
            lease_owner=None,
            lease_expires_at=None,
            updated_at=clock(session),
            attempts=Import.attempts - (0 if failed else 1),
        )
        .execution_options(synchronize_session=False)
    )


def stalled_attempts(session: Session, import_id: str) -> int:
    """Attempts since the last one that committed a batch (that one not counted)."""
    row = session.execute(
        select(Import.attempts, Import.progress_attempt).where(Import.id == import_id)
    ).one()
    return int(row[0] - row[1])


def still_wanted(session: Session, import_id: str, worker: str) -> bool:
    """The worker still holds the import and nobody asked to abort it."""
    row = session.execute(
        select(Import.lease_owner, Import.state, Import.abort_requested).where(
            Import.id == import_id
        )
    ).one_or_none()
    return row is not None and row[0] == worker and row[1] == "running" and not row[2]


def abort_was_requested(session: Session, import_id: str) -> bool:
    return bool(session.scalar(select(Import.abort_requested).where(Import.id == import_id)))


@dataclass(frozen=True)
class Progress:
    lines_processed: int
    bytes_processed: int
    events_total: int
    imported: int
    failed: int
    warnings: int
    excluded: int = 0
    do_not_track: int = 0


def record_progress(
    session: Session, import_id: str, worker: str, progress: Progress, *, committed: bool = True
) -> bool:
    """The counts of the import's last checkpoint; ``committed``: this attempt committed it
    (not one it resumed from), so the attempts before it no longer count against the import."""
    extra = {"progress_attempt": Import.attempts} if committed else {}
    result = session.execute(
        update(Import)
        .where(Import.id == import_id, Import.lease_owner == worker)
        .values(
            **extra,
            lines_processed=progress.lines_processed,
            bytes_processed=progress.bytes_processed,
            events_total=progress.events_total,
            events_imported=progress.imported,
            events_failed=progress.failed,
            warnings=progress.warnings,
            excluded=progress.excluded,
            do_not_track=progress.do_not_track,
            updated_at=clock(session),
        )
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def finish(
    session: Session, import_id: str, worker: str, state: str, failure_reason: str | None = None
) -> bool:
    """End a running import that ``worker`` holds as ``state``; whether it did. One that
    would end ``done`` but whose abort was asked meanwhile (after the worker's last look)
    ends ``aborted``, every event counted: the abort was answered 204, and the import said
    ``done`` (an import-lifecycle hunt)."""
    assert state in FINAL
    now = clock(session)
    ended: Any = state
    done: dict[str, Any] = {}
    if state == "done":
        done = {"bytes_processed": Import.bytes_total}
        ended = case((Import.abort_requested, "aborted"), else_="done")
    result = session.execute(
        update(Import)
        .where(Import.id == import_id, Import.lease_owner == worker, Import.state == "running")
        .values(
            **done,
            state=ended,
            failure_reason=failure_reason,
            finished_at=now,
            updated_at=now,
            lease_owner=None,
            lease_expires_at=None,
        )
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


# --- logs ------------------------------------------------------------------------------------


_LOG_COLUMNS = (
    "import_id",
    "line",
    "level",
    "type",
    "code",
    "message",
    "package_id",
    "tracking_pixel_id",
    "events_count",
    "failed_events_count",
    "created_at",
)


_LOG_FIELDS = _LOG_COLUMNS[1:-1]  # what each entry gives; the import and the time are shared
_LOG_TYPES = {"line": "bigint", "events_count": "bigint", "failed_events_count": "bigint"}


# A log entry's values in _LOG_FIELDS order: line, level, type, code, message, package_id,
# tracking_pixel_id, events_count, failed_events_count; or only the first five (SHORT_ROW), when
# the entry names no package or pixel and has no counts, as most have.
LogRow = tuple[object, ...]
SHORT_ROW = 5


def write_log_rows(session: Session, import_id: str, rows: Iterable[LogRow]) -> None:
    """Insert log entries given as rows of their values in :data:`_LOG_FIELDS` order; an entry
    already there (same import, line and code) is kept as is. The rows are read as they go in,
    a statement's worth at a time: an import's worker hands over a generator over its own
    entries, so no dict (or tuple) waits here for each of them (a dict each cost ~14 MB per
    20,000 entries and ~1 us an entry; an import can log every line).

    An import can have an entry on every line, so the entries go in a few statements, not one
    each: a statement per entry (``executemany``) gave up and took back the GIL on every row,
    and beside a busy import thread each row waited for it (200,000 entries took 702 s instead
    of 1.1 s). SQLite takes them as rows of one ``VALUES`` list, as many to a statement as its
    limit on parameters allows (2,500); PostgreSQL as one JSON parameter it unpacks
    (``json_to_recordset``). SQLite unpacking JSON (``json_each`` and a ``json_extract`` for
    each field) took 10.8-12.2 us an entry, the ``VALUES`` lists 4.6-5.6 us (200,000 entries
    into a fresh file).

    A short row (:data:`SHORT_ROW` values) has NULL written into the statement for the other
    four, not bound: Python's sqlite3 adapts every parameter that is not a str, int, float or
    bytearray, None too, looking for a ``__conform__`` it does not have. That was a quarter of
    the insert's time (py-spy: 300,000 warnings, 17.8-18.1 us an entry with the bench's own
    rows against 13.4-13.5 as short rows; a 1M re-import 10.5-11.3 s against 16.0-16.1).
    """
    now = utcnow()
    listed = ", ".join(_LOG_COLUMNS)
    connection = session.connection()
    rows = iter(rows)
    if connection.dialect.name == "sqlite":
        # as SQLAlchemy's DateTime keeps it in SQLite: naive UTC text
        created = (
            now.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
        )
        full = "(" + ", ".join("?" for _ in _LOG_COLUMNS) + ")"
        short = "(?, ?, ?, ?, ?, ?, NULL, NULL, NULL, NULL, ?)"  # _LOG_COLUMNS, SHORT_ROW given
        per_statement = _sqlite_rows_per_statement(connection.connection.dbapi_connection)
        while True:
            params: list[object] = []
            shapes: list[str] = []  # each row's
            for values in itertools.islice(rows, per_statement):
                params.append(import_id)
                params.extend(values)
                params.append(created)
                shapes.append(short if len(values) == SHORT_ROW else full)
            if not shapes:
                return
            connection.exec_driver_sql(
                f"INSERT INTO {ImportLog.__tablename__} ({listed}) VALUES "
                f"{', '.join(shapes)} ON CONFLICT (import_id, line, code) DO NOTHING",
                tuple(params),
            )
    listed_rows = [dict(zip(_LOG_FIELDS, values, strict=False)) for values in rows]  # short too
    if not listed_rows:
        return
    payload = orjson.dumps(listed_rows).decode()
    if "\\u0000" in payload:  # PostgreSQL's json refuses to make text of a NUL: U+FFFD
        payload = orjson.dumps(without_nul(listed_rows)).decode()
    fields = ", ".join(f"x.{name}" for name in _LOG_FIELDS)
    shape = ", ".join(f"{name} {_LOG_TYPES.get(name, 'text')}" for name in _LOG_FIELDS)
    connection.exec_driver_sql(
        f"INSERT INTO {ImportLog.__tablename__} ({listed}) SELECT %s, {fields}, %s "
        f"FROM json_to_recordset(%s::json) AS x({shape}) "
        "ON CONFLICT (import_id, line, code) DO NOTHING",
        (import_id, now, payload),
    )


# Log entries a SQLite statement inserts at most: 2,500 rows of 11 parameters, within the 32,766
# parameters SQLite allows since 3.32 (and fewer where a build allows fewer).
_SQLITE_LOG_ROWS = 2_500


def _sqlite_rows_per_statement(dbapi_connection: Any) -> int:
    limit: int = dbapi_connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    return max(1, min(_SQLITE_LOG_ROWS, limit // len(_LOG_COLUMNS)))


# What a log read gives: each entry as a row of its _LOG_FIELDS (by position, or by name:
# ``row.line``), not as an ImportLog object: building those was ~60% of streaming a log
# (py-spy of 200,000 entries, 30,500 entries/s in process), and no one reads when each was
# written.
_LOG_READ = tuple(getattr(ImportLog, name) for name in _LOG_FIELDS)
LogRead = Row[Any]  # a sequence of the _LOG_FIELDS values, in order


def sample_query(import_id: str, level: str) -> Select[Any]:
    """The first entries of ``level`` in log order, read through the index by level."""
    return (
        select(*_LOG_READ)
        .where(ImportLog.import_id == import_id, ImportLog.level == level)
        .order_by(ImportLog.line, ImportLog.code)
        .limit(LOG_SAMPLE)
    )


def page_query(import_id: str, after: tuple[int, str] | None, limit: int = 10_000) -> Select[Any]:
    """One page of the whole log in (line, code) order, the order of its unique key, which
    each page seeks into; ``after`` is the last (line, code) seen."""
    query = select(*_LOG_READ).where(ImportLog.import_id == import_id)
    return _seek(query, ImportLog.line, ImportLog.code, after, limit)


def _seek(
    query: Select[Any], line: Any, code: Any, after: tuple[int, str] | None, limit: int
) -> Select[Any]:
    """``query``'s next ``limit`` rows in (``line``, ``code``) order, past ``after`` (the
    last (line, code) seen; None: from the start)."""
    if after is not None:
        query = query.where(tuple_(line, code) > tuple_(*after))
    return query.order_by(line, code).limit(limit)


def log_sample(session: Session, import_id: str, level: str) -> Sequence[LogRead]:
    return session.execute(sample_query(import_id, level)).all()


def log_page(
    session: Session, import_id: str, after: tuple[int, str] | None, limit: int = 10_000
) -> Sequence[LogRead]:
    return session.execute(page_query(import_id, after, limit)).all()


# --- runs: one warning on many lines, as one row (see ImportLogRun) ---------------------------

# A run's values: code, first line, last line, entries, body (see imports/log_lines.py).
RunRow = tuple[str, int, int, int, bytes]
RunHead = Row[Any]  # id, code, first_line: a run's place in the log, without its body
_RUN_HEAD: tuple[Any, ...] = (ImportLogRun.id, ImportLogRun.code, ImportLogRun.first_line)


def write_log_runs(session: Session, import_id: str, runs: Sequence[RunRow]) -> None:
    """Insert runs; one already there (same import, first line and code) is kept as is."""
    if not runs:
        return
    now = utcnow()
    rows = [
        {
            "import_id": import_id,
            "code": code,
            "first_line": first,
            "last_line": last,
            "entries": entries,
            "body": body,
            "created_at": now,
        }
        for code, first, last, entries, body in runs
    ]
    dialect = session.connection().dialect.name
    keeping = (postgresql_insert if dialect == "postgresql" else sqlite_insert)(ImportLogRun)
    session.execute(keeping.on_conflict_do_nothing(), rows)


def drop_log_runs_from(session: Session, import_id: str, line: int) -> None:
    """Forget the runs that start at ``line`` or later: a resumed import makes them again."""
    session.execute(
        delete(ImportLogRun).where(
            ImportLogRun.import_id == import_id, ImportLogRun.first_line >= line
        )
    )


def drop_log_from(session: Session, import_id: str, line: int) -> None:
    """Forget every entry and run about ``line`` or later (the line after the last committed
    batch) of an import that ends aborted: the logger stores a batch's entries before the
    writer commits it, and the batches after the abort are never committed."""
    session.execute(
        delete(ImportLog).where(ImportLog.import_id == import_id, ImportLog.line >= line)
    )
    drop_log_runs_from(session, import_id, line)


def run_heads(
    session: Session, import_id: str, after: tuple[int, str] | None, limit: int = 1_000
) -> Sequence[RunHead]:
    """The next runs in the order they start, (first line, code), after ``after``."""
    query = select(*_RUN_HEAD).where(ImportLogRun.import_id == import_id)
    return session.execute(
        _seek(query, ImportLogRun.first_line, ImportLogRun.code, after, limit)
    ).all()


def run_body(session: Session, run_id: int) -> bytes:
    body: bytes = session.execute(
        select(ImportLogRun.body).where(ImportLogRun.id == run_id)
    ).scalar_one()
    return body
