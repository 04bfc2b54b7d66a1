"""The event store interface, what differs between its backends, and how to open one.

Two implementations share this interface: :class:`~eventport.events.duckdb_store.DuckDBEventStore`
(embedded default, a file in the data dir, owned by the ``eventport serve`` process) and
:class:`~eventport.events.postgres_store.PostgresEventStore`. Whatever differs between them that a
caller may need to know is declared once, in :class:`StoreCapabilities`; callers read the flags
instead of asking which backend they have.

Every write goes through :meth:`EventStore.write_batch`: one transaction that replaces the owner's
events whose ids the batch reuses, inserts the batch and records the import's checkpoint. Either
all of it is visible afterwards or none of it is.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy.engine import make_url

from eventport.events.batch import (
    AGENT_SCHEMA,
    PLACE_SCHEMA,
    ROW_SCHEMA,
    EventBatch,
    conform,
    normalize,
    widen,
)
from eventport.events.schema import (
    ARROW_SCHEMA,
    ARROW_TYPES,
    COLUMN_NAMES,
    COLUMNS,
    Batch,
    Checkpoint,
)
from eventport.export.csv import CsvLayout
from eventport.export.query import (
    BREAKDOWNS,
    ORGANIZATION_KINDS,
    AggregateRow,
    EventQuery,
    Rollup,
)
from eventport.positions import distinct, index_of

if TYPE_CHECKING:
    from eventport.settings import Settings

EVENTS_TABLE = "events"
CHECKPOINTS_TABLE = "event_import_checkpoints"
CHECKPOINT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Checkpoint))

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: The times a store accepts: what a Python datetime can hold, so every stored event reads back.
MIN_TIME_US = (datetime(1, 1, 1, tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)
MAX_TIME_US = (datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC) - _EPOCH) // timedelta(
    microseconds=1
)
_REQUIRED = tuple(c.name for c in COLUMNS if not c.nullable)
#: What :meth:`EventStore.stored_targets` answers: a stored event's id and where it counts.
STORED_TARGETS_SCHEMA = pa.schema(
    [("id", pa.string()), ("package_id", pa.string()), ("pixel_id", pa.string())]
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoreCapabilities:
    """What differs between event-store backends, declared once per backend."""

    backend: str
    #: Other processes (a second server, a CLI command) may open the store while it is in use.
    #: False for DuckDB: one process holds the file read-write, and that is ``eventport serve``.
    multi_process: bool
    #: ``write_batch`` calls from several threads (of different owners) run in parallel. When
    #: False they are serialized inside the store, so more than one writer thread buys nothing.
    parallel_writes: bool
    #: Events are stored in monthly time partitions.
    time_partitions: bool
    #: Text columns may hold U+0000. PostgreSQL text cannot: such a batch fails as a whole.
    text_allows_nul: bool
    #: Batch size this backend writes fastest. Any size works; for DuckDB, a batch of one row
    #: group (``duckdb_layout.ROW_GROUP_ROWS``) is compressed straight into the file instead of
    #: going through the write-ahead log (twice the rows/s of a batch of half a row group).
    preferred_batch_rows: int
    #: The store writes a batch in two steps that a writer can overlap with the batch before
    #: (:class:`StagedWrites`): its rows sent and held uncommitted while the batch before
    #: commits, then the rest of ``write_batch``'s transaction and the commit.
    staged_writes: bool = False


class EventStoreError(RuntimeError):
    """The event store cannot do what was asked (closed, locked by another process, ...)."""


class PreparedBatch:
    """A batch that one store's :meth:`EventStore.prepare_batch` made ready to be written for
    one owner. The store takes what it holds once (:meth:`take`): the caller keeps no reference
    to the batch's memory, which the store can let go of during the write."""

    def __init__(self, store: object, owner_id: str, contents: object) -> None:
        self._store = store
        self.owner_id = owner_id
        self._contents = contents
        self._taken = False

    def take(self, store: object, owner_id: str) -> Any:
        """What the store prepared; a ValueError for another store's or owner's batch."""
        if store is not self._store:
            raise ValueError("the batch was prepared by another event store")
        if owner_id != self.owner_id:
            raise ValueError(
                f"the batch was prepared for owner {self.owner_id!r}, not {owner_id!r}"
            )
        if self._taken:
            raise RuntimeError("the prepared batch was written already")
        contents, self._contents, self._taken = self._contents, None, True
        return contents


class StagedWrites(Protocol):
    """``write_batch`` in two steps, for a store with ``capabilities.staged_writes``: an import
    stages batch N+1 (its rows sent, uncommitted, on a connection of its own) while batch N
    commits, then commits N+1. Staging makes nothing visible; ``write_batch`` is the two steps
    one after the other."""

    def stage_batch(self, owner_id: str, batch: Batch) -> object:
        """Send the batch's rows in a transaction left open; raises what ``write_batch``
        would (and leaves nothing behind). The answer goes to :meth:`commit_staged` or
        :meth:`discard_staged`, exactly once."""
        ...

    def commit_staged(self, staged: object, checkpoint: Checkpoint) -> None:
        """The rest of ``write_batch``'s transaction (the events the batch's ids replace, the
        checkpoint) and its commit. Call it once the batches staged before it are committed:
        the events it replaces are those committed by then. On failure nothing of it stays."""
        ...

    def discard_staged(self, staged: object) -> None:
        """Roll the staged batch back."""
        ...

    def interrupt_writes(self, owner_id: str) -> None:
        """Cancel the statements that stage or commit the owner's batches now (called from
        another thread, when an import is aborted): the interrupted staging or commit raises
        :class:`WriteInterrupted` and leaves nothing of its batch, so an abort does not wait
        for a batch that will not count. A commit that ends before the cancel arrives
        stands."""
        ...


class WriteInterrupted(Exception):
    """A staged write or commit that :meth:`StagedWrites.interrupt_writes` cancelled: nothing
    of its batch was kept."""


class EventStore(Protocol):
    """Where imported events live. Safe to share between the threads of one process."""

    @property
    def capabilities(self) -> StoreCapabilities: ...

    def setup(self) -> None:
        """Create whatever is missing of the schema. Idempotent; call it at every start."""

    def stored_ids(self, owner_id: str, ids: pa.Array) -> pa.Array:
        """Those of ``ids`` (an Arrow string array) that already name an event of this owner,
        as an Arrow string array in any order: what an import looks up for every batch (a
        re-import finds every id, and a Python set of them cost ~10 MB a batch of 61,440).
        :func:`existing_ids` asks the same of a list."""
        ...

    def stored_targets(self, owner_id: str, ids: pa.Array) -> pa.Table:
        """The stored events of this owner that ``ids`` name: a table of
        :data:`STORED_TARGETS_SCHEMA` (``id``, ``package_id``, ``pixel_id``), a row an event.
        Asked only for an importer who may not write every package and pixel of the owner
        (see imports/pipeline.py ``_held_by_others``), in place of :meth:`stored_ids`."""
        ...

    def delete_events(
        self, owner_id: str, *, package_ids: Sequence[str] = (), pixel_ids: Sequence[str] = ()
    ) -> int:
        """Delete this owner's events of the packages ``package_ids`` and the pixels
        ``pixel_ids`` (ones deleted from the control store): no export could reach them, and
        their ``$unique_id``s are free again. The number of events deleted."""
        ...

    def expect_events(self, count: int) -> None:
        """A hint: about ``count`` events are about to be written (an import's estimate of
        its remaining lines). A store that keeps memory per stored event sizes it once, instead
        of growing it in steps as batches come. Nothing else depends on it."""

    def prepare_batch(self, owner_id: str, batch: Batch) -> PreparedBatch:
        """The part of :meth:`write_batch` that needs neither the store's lock nor its
        connection, done ahead: the checks (:class:`ValueError` for a malformed batch), the
        keys, the store's own form of the rows. An import prepares each batch on the thread
        that builds it, while its writing thread writes the batch before: the writing thread
        bounds an import's speed, so it is left only the writing. Nothing is written."""
        ...

    def write_batch(self, owner_id: str, batch: Batch, checkpoint: Checkpoint) -> None:
        """In one transaction: replace this owner's events with the batch's ids, insert the
        batch and upsert the checkpoint. Raises :class:`ValueError` for a malformed batch
        (before anything is written); on any failure nothing of it is visible. ``batch`` may
        be what this store's :meth:`prepare_batch` made of it for the same owner.

        Ids must be unique within the batch (the caller guarantees it). A store may let go of
        the batch's tables as soon as the transaction holds their rows (the embedded store does,
        before its commit): a caller that keeps no reference of its own lets their memory be
        used again while the commit runs.
        """

    def export_batches(
        self, query: EventQuery, columns: Sequence[str], *, batch_rows: int = 65_536
    ) -> Iterator[pa.RecordBatch]:
        """The selected events' ``columns`` (names from COLUMNS, any order), ordered by time
        then id, as Arrow record batches of at most ``batch_rows`` rows with the Arrow types of
        :data:`~eventport.events.schema.ARROW_TYPES`. Streams: memory stays bounded whatever
        the result's size, and concurrent imports are not blocked while it is consumed."""
        ...

    def export_csv(
        self,
        query: EventQuery,
        layout: CsvLayout,
        package_names: Mapping[str, str] | None = None,
        *,
        chunk_rows: int = 16_384,
    ) -> Iterator[bytes]:
        """The selected events as the CSV lines of ``layout`` (no header line), in the order
        of :meth:`export_batches`, in chunks of whole lines (about ``chunk_rows`` each):
        byte for byte what :func:`~eventport.export.csv.csv_lines` writes for
        :meth:`export_batches`' batches of ``layout.sources``. ``package_names`` maps package
        ids to names for a layout with a package-name column. Streams like
        :meth:`export_batches`."""
        ...

    def aggregate(
        self, query: EventQuery, rollup: Rollup, breakdown: str
    ) -> Iterator[AggregateRow]:
        """Counts of the selected events grouped by period, artifact and the breakdown's
        values, ordered by date, artifact, then values (NULLs last); see
        :mod:`eventport.export.query` for the counting rules."""
        ...

    def aggregates(
        self, query: EventQuery, kinds: Sequence[tuple[Rollup, str]]
    ) -> Iterator[tuple[Rollup, AggregateRow]]:
        """:meth:`aggregate` of each ``(rollup, breakdown)`` of ``kinds`` in turn, each row with
        its rollup, all counted in one snapshot of the store: the breakdowns of one request
        count the same events while imports commit (each read alone, by-total could count an
        event where by-version no longer did)."""
        ...

    def checkpoint(self, import_id: str) -> Checkpoint | None:
        """The last committed checkpoint of an import, or None when it has none."""
        ...

    def count(self, *, owner_id: str | None = None, import_id: str | None = None) -> int:
        """How many events there are, optionally only this owner's and/or this import's."""
        ...

    def rows(self, owner_id: str) -> list[dict[str, Any]]:
        """Every event of an owner as ``{column: value}`` (time: aware UTC datetime), ordered
        by import id and line. For tests and small reads only."""
        ...

    def close(self) -> None:
        """Release connections and files. Further calls raise :class:`EventStoreError`."""


def one_aggregate(
    store: EventStore, query: EventQuery, rollup: Rollup, breakdown: str
) -> Iterator[AggregateRow]:
    """:meth:`EventStore.aggregate` as the stores make it: one kind of their ``aggregates``
    (checked at once, read as the rows are)."""
    return (row for _, row in store.aggregates(query, [(rollup, breakdown)]))


def periods_sql(utc: str) -> dict[str, str]:
    """Each rollup's period of an event as a DATE (its first day), in SQL both stores read,
    from ``utc``, the event's time as a naive timestamp of the UTC wall clock (so periods do
    not depend on the session's time zone). Weeks are ISO weeks: they begin on Monday."""
    return {
        "daily": f"CAST({utc} AS DATE)",
        "weekly": f"CAST(date_trunc('week', {utc}) AS DATE)",
        "monthly": f"CAST(date_trunc('month', {utc}) AS DATE)",
        "yearly": f"CAST(date_trunc('year', {utc}) AS DATE)",
    }


#: The events an aggregate counts (aliased ``e``): neither asking not to be tracked nor excluded.
COUNTED_SQL = "NOT coalesce(e.dnt, false) AND NOT coalesce(e.excluded, false)"


@dataclass(frozen=True)
class BreakdownSql:
    """An aggregate's breakdown in SQL over the events (aliased ``e``), the same on every store:
    its values selected as ``v0``, ``v1``, ... (``select``, to follow other select items), the
    group keys (the period ``d`` and ``artifact`` first), their order, and which events it
    counts (``by-total-do-not-track``: those that asked not to be tracked)."""

    select: str
    keys: str
    order: str
    counted: str

    @classmethod
    def of(cls, breakdown: str) -> BreakdownSql:
        kind = ORGANIZATION_KINDS.get(breakdown)
        names = BREAKDOWNS[breakdown]
        if kind is None:
            values = [f'e."{name}"' for name in names]
        else:  # an organization breakdown counts only the origins of that kind
            values = [
                f"CASE WHEN e.origin_connection_type = '{kind}' THEN e.\"{name}\" END"
                for name in names
            ]
        aliases = [f"v{i}" for i in range(len(values))]
        return cls(
            select="".join(
                f", {value} AS {alias}" for value, alias in zip(values, aliases, strict=True)
            ),
            keys=", ".join(["d", "artifact", *aliases]),
            order=", ".join(["d", "artifact", *(f"{alias} NULLS LAST" for alias in aliases)]),
            counted=(
                "coalesce(e.dnt, false)" if breakdown == "by-total-do-not-track" else COUNTED_SQL
            ),
        )


def batch_table(owner_id: str, batch: Batch) -> pa.Table:
    """A batch as a wide Arrow table of :data:`~eventport.events.schema.ARROW_SCHEMA`,
    checked (see :func:`checked_batch`)."""
    if isinstance(batch, EventBatch):
        return widen(checked_batch(owner_id, batch))
    names = batch.column_names if isinstance(batch, pa.Table) else list(batch)
    missing = [name for name in COLUMN_NAMES if name not in names]
    unknown = sorted(set(names) - set(COLUMN_NAMES))
    if missing or unknown:
        raise ValueError(f"batch columns wrong: missing {missing}, unknown {unknown}")
    if isinstance(batch, pa.Table):
        table = batch.select(COLUMN_NAMES).cast(ARROW_SCHEMA)
    else:
        table = _dict_table(batch)
    _check_rows(owner_id, table)
    return table


def checked_batch(owner_id: str, batch: Batch) -> EventBatch:
    """A batch as an :class:`~eventport.events.batch.EventBatch`, checked.

    Raises :class:`ValueError` naming what is wrong: missing, unknown or uneven columns, a
    required value missing, an event of another owner, a time outside years 1 to 9999, a
    place or agent key that the batch does not define. Cheap next to the write (a few C-level
    passes over the required columns), so every store runs it before writing.
    """
    if not isinstance(batch, EventBatch):
        return normalize(batch_table(owner_id, batch))
    try:
        rows = conform(batch.rows, ROW_SCHEMA)
        places = conform(batch.places, PLACE_SCHEMA)
        agents = conform(batch.agents, AGENT_SCHEMA)
    except (KeyError, pa.ArrowInvalid) as exc:
        raise ValueError(f"batch columns wrong: {exc}") from exc
    _check_rows(owner_id, rows)
    for keys, table, name in ((rows, places, "place_key"), (rows, agents, "agent_key")):
        # In C where it is compiled: Arrow's unique and is_in build their hash tables again on
        # every call (a batch's place keys: 1.7-2.7 ms, against 0.8-0.9 ms).
        used = distinct(keys.column(name))
        if len(used) and index_of(used, pc.drop_null(table.column(name))).null_count:
            raise ValueError(f"batch rows name a {name} the batch does not define")
    return EventBatch(rows, places, agents)


def _check_rows(owner_id: str, table: pa.Table) -> None:
    if table.num_rows == 0:
        return
    for name in _REQUIRED:
        if table.column(name).null_count:
            raise ValueError(f"batch column {name!r} holds None; it is required")
    owners = distinct_texts(table.column("owner_id"))
    if owners != [owner_id]:
        raise ValueError(f"batch holds events of owners {sorted(owners)}, not only {owner_id!r}")
    times = pc.min_max(pc.cast(table.column("time"), pa.int64())).as_py()
    if times["min"] < MIN_TIME_US or times["max"] > MAX_TIME_US:
        raise ValueError("batch column 'time' holds a time outside years 1 to 9999")


def distinct_texts(column: pa.ChunkedArray) -> list[str]:
    """The distinct values of a text column, plain or dictionary-encoded (without decoding it
    row by row)."""
    if pa.types.is_dictionary(column.type):
        found: set[str] = set()
        for chunk in column.chunks:
            used = pc.unique(chunk.indices)
            found.update(chunk.dictionary.take(pc.drop_null(used)).to_pylist())
        return sorted(found)
    return sorted(pc.unique(column).to_pylist())


def _dict_table(batch: dict[str, Any]) -> pa.Table:
    """Columns by name (lists or Arrow arrays; times as microseconds) as a table."""
    length = len(batch["id"])
    uneven = [name for name in COLUMN_NAMES if len(batch[name]) != length]
    if uneven:
        raise ValueError(f"batch columns {uneven} do not have the {length} values of 'id'")
    arrays = []
    for column in COLUMNS:
        values = batch[column.name]
        arrow_type = ARROW_TYPES[column.type]
        if isinstance(values, pa.Array | pa.ChunkedArray):  # built in Arrow already
            arrays.append(values.cast(arrow_type))
        elif column.type == "timestamp":  # ints: no per-value conversion
            arrays.append(pa.array(values, pa.int64()).cast(arrow_type))
        else:
            arrays.append(pa.array(values, arrow_type))
    return pa.Table.from_arrays(arrays, schema=ARROW_SCHEMA)


def micros_to_datetime(micros: int) -> datetime:
    """Microseconds since the Unix epoch as an aware UTC datetime."""
    return _EPOCH + timedelta(microseconds=micros)


#: The embedded store's file in the data dir.
EVENTS_FILE = "events.duckdb"


def is_postgres_url(url: str | None) -> bool:
    return url is not None and url.startswith(
        ("postgresql://", "postgres://", "postgresql+psycopg://")
    )


def libpq_url(url: str) -> str:
    """A ``postgresql://`` URL for libpq from any of the spellings we accept."""
    for prefix in ("postgresql+psycopg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


def open_event_store(
    database_url: str | None,
    data_dir: Path,
    *,
    id_filter_mb: int = 64,
    duckdb_memory_mb: int = 128,
    duckdb_write_memory_mb: int | None = None,
    workers: int = 1,
) -> EventStore:
    """PostgreSQL when ``database_url`` is a PostgreSQL URL, else DuckDB in the data dir (with
    ``id_filter_mb`` for its filter of stored ids and ``duckdb_memory_mb`` for its buffer pool,
    ``duckdb_write_memory_mb`` for it while no read runs: None, the same). PostgreSQL keeps
    enough idle connections for ``workers`` imports at once (three each: a batch staged, one
    committing, the look-ups) and two readers, so a busy process does not connect per batch.

    The store is returned set up (:meth:`EventStore.setup` has run).
    """
    store: EventStore
    if database_url is not None and is_postgres_url(database_url):
        from eventport.events.postgres_store import PostgresEventStore

        idle = 2 + 3 * max(workers, 1)
        store = PostgresEventStore(libpq_url(database_url), max_idle_connections=idle)
    else:
        from eventport.events.duckdb_store import DuckDBEventStore

        store = DuckDBEventStore(
            data_dir / EVENTS_FILE,
            memory_limit=f"{duckdb_memory_mb}MB",
            write_memory_limit=(
                None if duckdb_write_memory_mb is None else f"{duckdb_write_memory_mb}MB"
            ),
            id_filter_bytes=id_filter_mb << 20,
        )
    try:
        store.setup()
    except BaseException:
        store.close()
        raise
    return store


def open_configured_event_store(settings: Settings) -> EventStore:
    """:func:`open_event_store` as the settings say (database URL, data dir, the embedded
    store's id filter and DuckDB memory), set up: what the server and the workers open."""
    url = settings.database_url
    if url is not None and not is_postgres_url(url):
        _claim_control_file(make_url(url).database or "", settings.data_dir / EVENTS_FILE)
    store = open_event_store(
        settings.database_url,
        settings.data_dir,
        id_filter_mb=settings.id_filter_mb,
        duckdb_memory_mb=settings.duckdb_memory_mb,
        duckdb_write_memory_mb=settings.duckdb_write_memory_mb,
        workers=settings.workers,
    )
    if url is None or not is_postgres_url(url):  # the store is now this process's
        from eventport.events.duckdb_compact import remove_leftovers

        for leftover in remove_leftovers(settings.data_dir / EVENTS_FILE):
            log.warning("removed %s, left by an `eventport compact` that was stopped", leftover)
    return store


# The control files this process holds for its embedded event store (see _claim_control_file).
_CLAIMED: dict[str, int] = {}


def _claim_control_file(control: str, events: Path) -> None:
    """Hold the SQLite control file (a lock on ``<file>.lock``, kept until the process ends)
    for the embedded event store at ``events``; :class:`EventStoreError` when another process
    holds it.

    An embedded store belongs to one process, and its imports' rows to the control database:
    two servers with data dirs of their own and one SQLite control file
    (``EVENTPORT_DATABASE_URL=sqlite:///…``) each claimed the other's imports and wrote their
    events into its own DuckDB file, where the other's exports never looked (an operations
    hunt). A PostgreSQL deployment shares its events; the default keeps the control file in
    the data dir, which DuckDB's own lock guards. A POSIX record lock is the process's: the
    servers a test runs in one process, one after another, share it."""
    path = str(Path(control).resolve())
    if path in _CLAIMED:
        return
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        other = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another data dir"
        os.close(fd)
        raise EventStoreError(
            f"another eventport process uses the control database {path}, with the embedded "
            f"event store at {other}: an embedded store belongs to one process, and a second "
            "one would take imports whose events the first never sees. Give each server a "
            "control database of its own (leave EVENTPORT_DATABASE_URL unset), or share one "
            "PostgreSQL database for both control data and events"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(events.resolve()).encode(), 0)
    _CLAIMED[path] = fd


def existing_ids(store: EventStore, owner_id: str, ids: Sequence[str] | pa.Array) -> set[str]:
    """Which of ``ids`` (a list, or an Arrow string array) already name an event of the owner
    in ``store`` (its :meth:`EventStore.stored_ids`)."""
    column = ids if isinstance(ids, pa.Array) else pa.array(ids, pa.string())
    return set(store.stored_ids(owner_id, column).to_pylist())
