"""The embedded event store: one DuckDB file in the data dir.

DuckDB lets only one process open a file read-write, so the embedded store belongs to the
``eventport serve`` process (its API routes and import workers share this one object). Other
processes — CLI commands, a second server — must go through that server's API, or the
deployment must use PostgreSQL. Opening a file another process holds raises
:class:`~eventport.events.store.EventStoreError` saying so.

Layout, chosen for bulk-load speed:

* ``events`` has the columns of :data:`~eventport.events.schema.COLUMNS` plus ``id_key``, a
  128-bit MD5 of ``owner_id || NUL || id``. There is no primary key or ART index (they slow bulk
  loads badly). Finding which of a batch's ids exist is a hash join of the batch (a registered
  Arrow table) against ``id_key`` alone: a fixed-width column DuckDB scans with a pushed-down
  Bloom filter, several times faster than scanning the ``id`` strings, and without reading
  ``owner_id`` since the owner is part of the key. (MD5 is not collision resistant against
  someone crafting ids, but the key includes the owner, so crafted ids could only ever replace
  that owner's own events.) That scan reads every stored key, so a Bloom filter of the stored
  keys (:mod:`eventport.events.id_filter`, in memory, built from the file on first use) picks
  the few ids that may be stored; a batch of new ids looks up and deletes nothing. The filter
  must see every write: one process owns the file, and its store objects of the file share
  the filter (and the write lock).
* An id that is a canonical UUID (as most ``$unique_id`` values are) is kept as its number in
  ``id_uuid``, the ``id`` text null; reads give the text back (see ``duckdb_layout.ID_UUID``).
* A batch arrives as columns, becomes one Arrow table with the schema's types, and is inserted
  with a single ``INSERT … SELECT`` from it; the delete of replaced ids joins the same table.
* ``event_import_checkpoints`` is a tiny keyed table in the same file, written in the same
  transaction as the batch.

One connection, guarded by a lock: DuckDB serializes writers anyway, and one transaction at a
time keeps the ``write_batch`` contract plain. Exports and aggregates run on cursors of their
own (more connections to the same database, made under the lock): DuckDB's MVCC lets them
read a snapshot while imports write, and the lock is not held while their results stream.
Aggregates are computed from the events at query time; the selected artifacts and the decoded
``variables`` items travel as registered Arrow tables, never spliced into the SQL.

One query runs on one thread (the ``threads`` setting is global and kept low for imports), so
CSV exports and aggregates use two cursors side by side, opened on one snapshot (see
``_snapshot_readers``: this relies on ``write_batch`` beginning and committing under the lock).
A CSV export's lines are written by DuckDB itself (:mod:`eventport.events.duckdb_csv`), in time
windows spread over the cursors (:mod:`eventport.events.duckdb_pipeline`); an aggregate is cut
into parts where periods begin (:mod:`eventport.export.periods`), one per cursor.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow as pa

from eventport.domain.errors import StoreBusy
from eventport.events.duckdb_csv import (
    LINE,
    SORT_ID,
    SORT_TIME,
    chunks_of,
)
from eventport.events.duckdb_layout import (
    BATCH_DIMENSIONS,
    BATCH_MAYBE,
    BATCH_VIEW,
    CHECKPOINT_COLUMNS,
    COLUMN_OF,
    DIMENSION_TABLES,
    ID_KEY,
    ID_UUID,
    ID_UUID_SQL,
    IDS_VIEW,
    ITEMS_VIEW,
    OLD_EVENTS,
    PACKAGES_VIEW,
    PIXELS_VIEW,
    ROW_COLUMNS,
    ROW_GROUP_ROWS,
    ROW_NAMES_SQL,
    ROW_VALUES_SQL,
    ROWS_TABLE,
    SELECT_COLUMNS,
    SPELLED_KEYS,
    SPELLED_KEYS_SQL,
    Config,
    column_sql,
    columns_of,
    defined,
    fetch_all,
    file_cursor,
    fold_extras,
    migrate_wide_events,
    open_file,
    quoted,
    row_column_sql,
    row_value,
    save_checkpoint,
    view_sql,
    with_keys,
)
from eventport.events.duckdb_pipeline import WindowPipeline
from eventport.events.duckdb_pool import PoolLimit, ran_out_of_memory, set_memory_limit, size_bytes
from eventport.events.duckdb_queries import (
    ARTIFACT,
    BY_VARIABLE,
    ESCAPED_ITEMS,
    EXPORT_PLAN,
    IN_WINDOW,
    ITEMS,
    NAMES_VIEW,
    PERIODS,
    SCATTERED_SECONDS_PER_ROW,
    SELECTED_WHERE,
    SORT_KEYS,
    WINDOW_COUNT,
    DimensionTexts,
    added_up,
    aggregate_events_within,
    aggregate_rows,
    aggregate_sql,
    counted_shard,
    export_windows,
    names_table,
    selected_from,
    selection_params,
    selection_tables,
    shard_condition,
    sorted_artifacts,
    sorted_by_duckdb,
    sorted_window,
    utc_text,
    within_memory,
)
from eventport.events.id_filter import IdFilter
from eventport.events.id_filter import available as id_filter_available
from eventport.events.keys import (
    HALF_MASK,
    RecentIdKeys,
)
from eventport.events.schema import (
    COLUMN_NAMES,
    Batch,
    Checkpoint,
)
from eventport.events.store import (
    CHECKPOINT_FIELDS,
    CHECKPOINTS_TABLE,
    EVENTS_TABLE,
    STORED_TARGETS_SCHEMA,
    EventStoreError,
    PreparedBatch,
    StoreCapabilities,
    checked_batch,
    micros_to_datetime,
    one_aggregate,
)
from eventport.export.csv import CsvLayout
from eventport.export.periods import plan_counted_parts
from eventport.export.query import (
    AggregateRow,
    EventQuery,
    Rollup,
    check_aggregate,
    export_schema,
    variable_pair,
)
from eventport.positions import KnownKeys

T = TypeVar("T")


class _BatchTables:
    """A batch's tables (by the name each is registered under) for its write transaction,
    which lets go of them once their rows are in (see DuckDBEventStore._write_transaction)."""

    def __init__(self, tables: list[tuple[str, pa.Table]]) -> None:
        self.tables = tables
        self.let_go = False

    def register(self, con: duckdb.DuckDBPyConnection) -> None:
        for name, table in self.tables:
            con.register(name, table)

    def unregister(self, con: duckdb.DuckDBPyConnection) -> None:
        for name, _ in self.tables:  # a name not registered (yet): DuckDB does nothing
            con.unregister(name)

    def let_go_of(self, con: duckdb.DuckDBPyConnection) -> None:
        self.unregister(con)
        self.tables = []
        self.let_go = True


def default_threads() -> int:
    """Threads DuckDB may use: half the cores, at most 4; import workers parse on the others.

    More threads do not speed up inserting a 50,000-row batch (on 2 cores, 2 threads made it
    twice as slow as 1); they speed up scans of large tables.
    """
    return max(1, min(4, (os.cpu_count() or 1) // 2))


def default_export_workers() -> int:
    """Cursors that build one CSV export's lines side by side: two where there are two cores
    (one query runs on one thread: the store's ``threads`` setting is global and kept low for
    imports), one on a single core."""
    return max(1, min(2, os.cpu_count() or 1))


def _kept_blocks(memory_limit: str, write_memory_limit: str | None) -> str:
    """How much of its freed blocks DuckDB keeps for reuse: twice the write limit, at most
    the full limit (see DuckDBEventStore.__init__)."""
    full = size_bytes(memory_limit)
    if write_memory_limit is None:
        return f"{full}B"
    return f"{min(full, 2 * size_bytes(write_memory_limit))}B"


class DuckDBEventStore:
    """The event store in one DuckDB file; see the module docstring."""

    capabilities = StoreCapabilities(
        backend="duckdb",
        multi_process=False,
        parallel_writes=False,
        time_partitions=False,
        # One row group of the file: such a batch is compressed straight into it, skipping the
        # write-ahead log (twice as fast as a batch of half a row group).
        preferred_batch_rows=ROW_GROUP_ROWS,
        text_allows_nul=True,
    )

    def __init__(
        self,
        path: Path,
        *,
        threads: int | None = None,
        memory_limit: str = "128MB",
        write_memory_limit: str | None = None,
        checkpoint_threshold: str = "256MB",
        export_window_rows: int = 131_072,
        export_workers: int | None = None,
        id_filter_bytes: int = 64 << 20,
        aggregate_events: int | None = None,
        row_group_rows: int = ROW_GROUP_ROWS,
    ) -> None:
        """Open (creating if needed) the file at ``path``.

        ``memory_limit`` caps DuckDB's buffer pool (it spills to ``<file>.tmp`` beyond it).
        ``write_memory_limit``, if lower, caps it while no export or aggregate runs: imports
        then write within it (see events/duckdb_pool.py).
        DuckDB keeps up to twice the write limit (at most ``memory_limit``) of its 256 KB
        blocks for reuse once it has used them (see the comment at ``block_allocator_memory``).
        ``checkpoint_threshold`` is the write-ahead-log size at which DuckDB folds the log into
        the file: larger means fewer, bigger checkpoints (the default 16MB checkpoints after
        nearly every 50,000-event batch and halves the insert rate); a crash replays the log.
        ``export_window_rows`` is about how many events an export sorts at a time (see
        :meth:`export_batches`): its memory, and the number of scans of a large export.
        ``id_filter_bytes`` caps the memory of the filter of stored ids (events/id_filter.py);
        0: no filter. ``aggregate_events``: the most events one part of an aggregate counts at
        a time (see :meth:`_aggregate_in_parts`); by default what ``memory_limit`` holds.
        ``row_group_rows``: the rows of a row group written from now on (a multiple of 2,048;
        imports write batches of :data:`ROW_GROUP_ROWS`, which makes whole row groups of them).

        Objects of one file in a process share its database (the first one's settings), its
        write lock and id filter.
        """
        self.path = path
        self._memory_limit = memory_limit
        path.parent.mkdir(parents=True, exist_ok=True)
        config: Config = {
            "threads": threads or default_threads(),
            "memory_limit": memory_limit,
            "checkpoint_threshold": checkpoint_threshold,
            # Blocks DuckDB frees are kept for its next ones, up to twice the write limit (at
            # most the full one), instead of going back to the system: each batch's blocks
            # were fresh pages, faulted in and zeroed by the kernel (~1 s of a 5M enriched
            # import's CPU). An import's writes use more blocks than the write limit: kept up
            # to it (40 MB), the writer still faulted 870,000 pages in the server (923,000
            # before), at 64 MB 497,000, at 80 MB 329,000, at 128 MB 331,000. 5M enriched
            # over HTTP, three interleaved pairs (128 MB): 15.05-15.30 s against 15.55-16.30,
            # system CPU 3.6-4.0 s against 4.6-4.9. The kept pages count while an export runs:
            # its peak (bench/export.py, 31 days of 10M events) 497-516 MB at 80 MB, 506-536
            # at 128 MB, against 486-494 before, at the same speed.
            "block_allocator_memory": _kept_blocks(memory_limit, write_memory_limit),
        }
        try:
            self._shared, con = _share_file(path, config, row_group_rows)
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise EventStoreError(
                    f"the event store {path} is open in another process: the embedded (DuckDB) "
                    "event store belongs to the `eventport serve` process; use its API, stop "
                    f"it first, or use PostgreSQL ({exc})"
                ) from exc
            raise
        self._con: duckdb.DuckDBPyConnection | None = con
        self._lock = self._shared.lock  # one transaction at a time on the file
        if self._shared.pool is None:  # the first store object's limits are the database's
            self._shared.pool = PoolLimit(memory_limit, write_memory_limit)
        self._pool = self._shared.pool
        self._lookup: duckdb.DuckDBPyConnection | None = None  # stored_ids' own cursor
        self._lookup_lock = threading.Lock()
        self._id_keys = RecentIdKeys()  # stored_ids' keys, found again by write_batch
        self._id_filter_bytes = id_filter_bytes
        self._window_rows = export_window_rows
        self._export_workers = export_workers or default_export_workers()
        self._aggregate_events = aggregate_events or aggregate_events_within(
            memory_limit, self._export_workers
        )
        self._scattered_seconds = SCATTERED_SECONDS_PER_ROW

    # -- the interface -------------------------------------------------------------------------

    def setup(self) -> None:
        with self._lock:
            con = self._connection()
            fetch_all(con, "BEGIN TRANSACTION")
            try:
                self._create_tables(con)
                fetch_all(con, "COMMIT")
            except BaseException:
                with contextlib.suppress(duckdb.Error):
                    fetch_all(con, "ROLLBACK")
                raise

    def _create_tables(self, con: duckdb.DuckDBPyConnection) -> None:
        wide = fetch_all(
            con,
            "SELECT table_type FROM information_schema.tables WHERE table_catalog = "
            "current_database() AND table_schema = current_schema() AND table_name = ?",
            [EVENTS_TABLE],
        )
        old = bool(wide) and wide[0][0] == "BASE TABLE"  # a file from before the row tables
        if old:
            fetch_all(con, f"ALTER TABLE {EVENTS_TABLE} RENAME TO {OLD_EVENTS}")
        rows = ", ".join(row_column_sql(c) for c in ROW_COLUMNS)
        fetch_all(
            con,
            f"CREATE TABLE IF NOT EXISTS {ROWS_TABLE} ({defined('id_key', 'UHUGEINT')} "
            f"NOT NULL, {rows}, place_key BIGINT, agent_key BIGINT, "
            f"{defined('origin_key', 'UHUGEINT')}, {defined('endpoint_key', 'UHUGEINT')}, "
            f"extras VARCHAR, {ID_UUID_SQL})",
        )
        for table, key, fields in DIMENSION_TABLES:
            listed = ", ".join(column_sql(n, COLUMN_OF[n].type, True) for n in fields)
            fetch_all(
                con,
                f"CREATE TABLE IF NOT EXISTS {table} ({key} BIGINT PRIMARY KEY, {listed})",
            )
        for table, wanted in (
            (ROWS_TABLE, ROW_COLUMNS),
            *((table, [COLUMN_OF[n] for n in fields]) for table, _, fields in DIMENSION_TABLES),
        ):
            have = columns_of(con, table)
            for column in wanted:  # columns added to the schema since the file was created
                if column.name not in have:
                    if not column.nullable:
                        raise EventStoreError(f"cannot add required column {column.name!r}")
                    fetch_all(
                        con,
                        f"ALTER TABLE {table} ADD COLUMN "
                        f"{column_sql(column.name, column.type, True)}",
                    )
        if "endpoint_key" not in columns_of(con, ROWS_TABLE):  # a file from before it
            fetch_all(
                con, f"ALTER TABLE {ROWS_TABLE} ADD COLUMN {defined('endpoint_key', 'UHUGEINT')}"
            )
        fold_extras(con)
        if "id_uuid" not in columns_of(con, ROWS_TABLE):  # a file from before it
            fetch_all(con, f"DROP VIEW IF EXISTS {EVENTS_TABLE}")  # made again below
            fetch_all(con, f"ALTER TABLE {ROWS_TABLE} ALTER COLUMN id DROP NOT NULL")
            fetch_all(con, f"ALTER TABLE {ROWS_TABLE} ADD COLUMN {ID_UUID_SQL}")
        if old:
            migrate_wide_events(con)
        fetch_all(con, view_sql())
        fetch_all(
            con,
            f"CREATE TABLE IF NOT EXISTS {CHECKPOINTS_TABLE} ("
            "import_id VARCHAR PRIMARY KEY, "
            + ", ".join(f"{quoted(f)} BIGINT NOT NULL" for f in CHECKPOINT_FIELDS[1:])
            + ", updated_at TIMESTAMPTZ NOT NULL)",
        )
        have = columns_of(con, CHECKPOINTS_TABLE)
        for name in CHECKPOINT_FIELDS[1:]:  # counters added since the file was created
            if name not in have:
                fetch_all(
                    con,
                    f"ALTER TABLE {CHECKPOINTS_TABLE} ADD COLUMN {quoted(name)} BIGINT "
                    "NOT NULL DEFAULT 0",
                )

    def stored_ids(self, owner_id: str, ids: pa.Array) -> pa.Array:
        """On a cursor of its own: the lookup reads the last committed snapshot and does not
        wait for a batch being written (the worker looks up the next batch meanwhile)."""
        found = self._look_up_ids(
            owner_id,
            ids,
            f"SELECT id FROM {IDS_VIEW} WHERE {ID_KEY} IN (SELECT id_key FROM {ROWS_TABLE})",
        )
        return pa.array([], pa.string()) if found is None else found.column(0).combine_chunks()

    def stored_targets(self, owner_id: str, ids: pa.Array) -> pa.Table:
        """See :class:`~eventport.events.store.EventStore`; read as :meth:`stored_ids` is."""
        found = self._look_up_ids(
            owner_id,
            ids,
            f"SELECT i.id, r.package_id, r.pixel_id FROM {IDS_VIEW} i "
            f"JOIN {ROWS_TABLE} r ON r.id_key = {ID_KEY}",
        )
        if found is None:
            return STORED_TARGETS_SCHEMA.empty_table()
        return found.rename_columns(STORED_TARGETS_SCHEMA.names).cast(STORED_TARGETS_SCHEMA)

    def delete_events(
        self, owner_id: str, *, package_ids: Sequence[str] = (), pixel_ids: Sequence[str] = ()
    ) -> int:
        """See :class:`~eventport.events.store.EventStore`. The id filter keeps their keys: a
        later id among them costs a scan for nothing, as any filter's false match does."""
        if not package_ids and not pixel_ids:
            return 0
        statement = (
            f"DELETE FROM {ROWS_TABLE} WHERE owner_id = ? "
            "AND (list_contains(?, package_id) OR list_contains(?, pixel_id))"
        )
        params = [owner_id, list(package_ids), list(pixel_ids)]
        with self._lock:
            con = self._connection()
            self._pool.before_write(lambda limit: set_memory_limit(con, limit))
            deleted = self._widening(con, lambda: fetch_all(con, statement, params))
        return int(deleted[0][0]) if deleted else 0

    def _look_up_ids(self, owner_id: str, ids: pa.Array, statement: str) -> pa.Table | None:
        """``statement`` run over the view ``IDS_VIEW`` of ``ids`` (columns ``id``, ``id_hi``
        and ``id_lo``, those the id filter may hold); None when there are none."""
        if not len(ids):
            return None
        high, low = self._id_keys(owner_id, ids)
        table = pa.table({"id": ids, "id_hi": high, "id_lo": low})
        stored = self._shared.ids
        if stored is None and self._filtered():
            with self._lock:
                stored = self._id_filter(self._connection())
        if stored is not None:  # only the ids it may hold are looked for
            maybe = stored.candidates(high, low)
            if not len(maybe):
                return None
            table = table.take(maybe)
        with self._lookup_lock:
            if self._lookup is None:
                with self._lock:
                    self._lookup = file_cursor(self._connection())
            cursor = self._lookup
            cursor.register(IDS_VIEW, table)
            try:
                return self._widening(cursor, lambda: cursor.sql(statement).to_arrow_table())
            finally:
                cursor.unregister(IDS_VIEW)

    def expect_events(self, count: int) -> None:
        """See :class:`~eventport.events.store.EventStore`: the filter of stored ids makes room
        for ``count`` more keys at once (events/id_filter.py ``reserve``)."""
        if count <= 0 or not self._filtered():
            return
        with self._lock:
            ids = self._id_filter(self._connection())
            if ids is not None:
                ids.reserve(count)

    def prepare_batch(self, owner_id: str, batch: Batch) -> PreparedBatch:
        """The batch checked, its rows with their keys (:func:`with_keys`), and only the
        places and agents that the file may not hold yet: those of the keys this process has
        not committed (the insert's own anti-join stays the rule; skipping it for known keys
        saved 0.8 s of writing in a 5M enriched import, 10 ms a batch)."""
        checked = checked_batch(owner_id, batch)
        del batch
        tables: list[tuple[str, pa.Table]] = []
        if checked.num_rows:
            tables.append((BATCH_VIEW, with_keys(owner_id, checked.rows, self._id_keys)))
            for (table, key, _), frame in zip(
                DIMENSION_TABLES, (checked.places, checked.agents), strict=True
            ):
                frame = frame.filter(self._shared.known[table].unknown(frame.column(key)))
                if frame.num_rows:
                    tables.append((BATCH_DIMENSIONS[table], frame))
        return PreparedBatch(self, owner_id, tables)

    def write_batch(self, owner_id: str, batch: Batch, checkpoint: Checkpoint) -> None:
        if not isinstance(batch, PreparedBatch):  # outside the lock: plain CPU work
            batch = self.prepare_batch(owner_id, batch)
        # The tables are let go once their rows are in (see _write_transaction).
        tables = _BatchTables(batch.take(self, owner_id))
        del batch
        values = [getattr(checkpoint, f) for f in CHECKPOINT_FIELDS]
        with self._lock:
            con = self._connection()
            ids = self._id_filter(con) if tables.tables else None
            self._pool.before_write(lambda limit: set_memory_limit(con, limit))
            self._widening(con, lambda: self._write_transaction(con, tables, ids, values))

    def _write_transaction(
        self,
        con: duckdb.DuckDBPyConnection,
        batch: _BatchTables,
        ids: IdFilter | None,
        values: list[object],
    ) -> None:
        """``write_batch``'s transaction (under the write lock): the batch's places, agents and
        rows (replacing stored events of the same ids) and the import's checkpoint.

        Once the rows are in, the batch's tables are let go of, before the commit: DuckDB
        holds the rows by then, and the commit (which compresses them, most of a write's time)
        runs while the next batch is built, which can take the Arrow memory they held (~25 MB a
        batch; measured on 5M enriched events, interleaved: peak 488-493 MB against 492-506).
        So a commit that runs out of the write limit cannot be made again with the batch: the
        limit is widened all the same (:meth:`_widening`) and the write fails; the import's next
        attempt resumes from its checkpoint at the full limit. Running out before the commit
        (in the inserts, which hold the most) is made again at once, whole.
        """
        if batch.let_go:
            raise EventStoreError(
                "the batch ran out of memory in its commit and cannot be written again; "
                "the import resumes from its last checkpoint at the full memory limit"
            )
        fetch_all(con, "BEGIN TRANSACTION")
        try:
            save_checkpoint(con, values)
            batch.register(con)
            added: list[tuple[str, pa.ChunkedArray]] = []  # dimension keys, known once committed
            if batch.tables:
                held = dict(batch.tables)
                for table, key, _ in DIMENSION_TABLES:
                    source = BATCH_DIMENSIONS[table]
                    if source not in held:  # every key known committed (prepare_batch)
                        continue
                    # Only the batch's keys are held in memory: a NOT IN over the whole table
                    # hashed every stored key, and failed every batch once they outgrew the
                    # memory limit (1.5M places at 128 MB).
                    fetch_all(
                        con,
                        f"INSERT INTO {table} SELECT * FROM {source} WHERE {key} NOT IN "
                        f"(SELECT {key} FROM {table} WHERE {key} IN "
                        f"(SELECT {key} FROM {source}))",
                    )
                    added.append((table, held[source].column(key)))
                del held
                keyed = batch.tables[0][1]
                self._delete_replaced(con, keyed, ids)
                fetch_all(
                    con,
                    f"INSERT INTO {ROWS_TABLE} (id_key, {ROW_NAMES_SQL}, {SPELLED_KEYS}, "
                    f"id_uuid) SELECT {ID_KEY}, "
                    f"{ROW_VALUES_SQL['extras' in keyed.column_names]}, "
                    f"{SPELLED_KEYS_SQL}, {ID_UUID} FROM {BATCH_VIEW}",
                )
                del keyed
                batch.let_go_of(con)
            self._before_commit()
            fetch_all(con, "COMMIT")
            for table, keys in added:
                self._shared.known[table].add(keys)
        except BaseException:
            # A failed COMMIT has already ended the transaction; the first error matters.
            with contextlib.suppress(duckdb.Error):
                fetch_all(con, "ROLLBACK")
                con.unregister(BATCH_MAYBE)  # if _delete_replaced failed (else: nothing)
            raise
        finally:
            batch.unregister(con)

    def _widening(self, cursor: duckdb.DuckDBPyConnection, attempt: Callable[[], T]) -> T:
        """``attempt()`` (a write's, or an import's look-up), made again at the full memory
        limit if it ran out of the write limit (see events/duckdb_pool.py)."""
        try:
            return attempt()
        except duckdb.Error as exc:
            if not ran_out_of_memory(exc):
                raise
            if not self._pool.widen(lambda limit: set_memory_limit(cursor, limit)):
                raise  # the full limit was not enough either
            return attempt()

    def export_batches(
        self, query: EventQuery, columns: Sequence[str], *, batch_rows: int = 65_536
    ) -> Iterator[pa.RecordBatch]:
        """See :class:`~eventport.events.store.EventStore`. DuckDB's ORDER BY of millions of
        wide rows runs out of a small buffer pool (and is slow when it does not), so the events
        go out in time windows of about ``export_window_rows`` events, planned from per-hour
        counts and each sorted by Arrow; every window reads the same snapshot. Where events
        were imported in time order, each window reads only its own row groups."""
        schema = export_schema(columns)
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be positive, not {batch_rows}")
        params = selection_params(query)
        self._connection()  # a closed store says so now, not at the first batch
        return within_memory(self._export(query, params, schema, batch_rows), self._memory_limit)

    def export_csv(
        self,
        query: EventQuery,
        layout: CsvLayout,
        package_names: Mapping[str, str] | None = None,
        *,
        chunk_rows: int = 16_384,
    ) -> Iterator[bytes]:
        """See :class:`~eventport.events.store.EventStore`. DuckDB writes the lines itself
        (:mod:`eventport.events.duckdb_csv`), in the time windows of :meth:`export_batches`;
        each window's lines are put in order by Arrow and handed on ``chunk_rows`` at a time,
        as the bytes of the Arrow buffer that holds them."""
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be positive, not {chunk_rows}")
        params = selection_params(query)
        self._connection()
        lines = self._export_csv(query, params, layout, package_names or {}, chunk_rows)
        return within_memory(lines, self._memory_limit)

    def aggregate(
        self, query: EventQuery, rollup: Rollup, breakdown: str
    ) -> Iterator[AggregateRow]:
        return one_aggregate(self, query, rollup, breakdown)

    def aggregates(
        self, query: EventQuery, kinds: Sequence[tuple[Rollup, str]]
    ) -> Iterator[tuple[Rollup, AggregateRow]]:
        for rollup, breakdown in kinds:
            check_aggregate(rollup, breakdown)
        params = selection_params(query)
        self._connection()
        return within_memory(self._aggregates(query, kinds, params), self._memory_limit)

    def checkpoint(self, import_id: str) -> Checkpoint | None:
        with self._lock:
            found = fetch_all(
                self._connection(),
                f"SELECT {CHECKPOINT_COLUMNS} FROM {CHECKPOINTS_TABLE} WHERE import_id = ?",
                [import_id],
            )
        return Checkpoint(*found[0]) if found else None

    def count(self, *, owner_id: str | None = None, import_id: str | None = None) -> int:
        conditions, params = [], []
        if owner_id is not None:
            conditions.append("owner_id = ?")
            params.append(owner_id)
        if import_id is not None:
            conditions.append("import_id = ?")
            params.append(import_id)
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        with self._lock:
            found = fetch_all(
                self._connection(), f"SELECT count(*) FROM {ROWS_TABLE}{where}", params
            )
        return int(found[0][0])

    def rows(self, owner_id: str) -> list[dict[str, Any]]:
        with self._lock:
            found = fetch_all(
                self._connection(),
                f"SELECT {SELECT_COLUMNS} FROM {EVENTS_TABLE} WHERE owner_id = ? "
                "ORDER BY import_id, line, id",
                [owner_id],
            )
        result = []
        for values in found:
            row = dict(zip(COLUMN_NAMES, values, strict=True))
            row["time"] = micros_to_datetime(row["time"])
            result.append(row)
        return result

    def close(self) -> None:
        with self._lookup_lock, self._lock:
            if self._lookup is not None:
                self._lookup.close()
                self._lookup = None
            if self._con is not None:
                self._con.close()
                self._con = None
                _unshare_file(self._shared)

    # -- internals ----------------------------------------------------------------------------

    def _id_filter(self, con: duckdb.DuckDBPyConnection) -> IdFilter | None:
        """The filter of stored id keys (None without the C extension), built from the stored
        keys when first needed. Called with ``self._lock`` held: no write adds keys meanwhile."""
        if self._shared.ids is not None or not self._filtered():
            return self._shared.ids
        stored = int(fetch_all(con, f"SELECT count(*) FROM {ROWS_TABLE}")[0][0])
        ids = IdFilter(2 * stored, self._id_filter_bytes)
        reader = con.sql(
            f"SELECT CAST(id_key >> 64 AS UBIGINT) AS hi, "
            f"CAST(id_key & {HALF_MASK} AS UBIGINT) AS lo FROM {ROWS_TABLE}"
        ).to_arrow_reader(1 << 20)
        try:
            for keys in reader:
                ids.add(keys.column(0), keys.column(1))
        finally:
            reader.close()
        self._shared.ids = ids
        return ids

    def _filtered(self) -> bool:
        return id_filter_available() and self._id_filter_bytes > 0

    def _delete_replaced(
        self, con: duckdb.DuckDBPyConnection, keyed: pa.Table, ids: IdFilter | None
    ) -> None:
        """Delete the stored events the batch replaces: those of the ids the filter may hold
        (each one is a scan of every stored id key; a batch of new ids costs none).

        The filter is told the batch's other keys in the same pass, before the commit, so it
        never misses a committed key (a re-import's keys, every one a candidate, add nothing:
        it does not grow as if they were new). A write made again after a failure finds them
        all candidates: a scan for nothing."""
        source = BATCH_VIEW
        if ids is not None:
            maybe = ids.candidates(keyed.column("id_hi"), keyed.column("id_lo"), adding=True)
            if not len(maybe):
                return
            con.register(BATCH_MAYBE, keyed.select(["id_hi", "id_lo"]).take(maybe))
            source = BATCH_MAYBE
        fetch_all(con, f"DELETE FROM {ROWS_TABLE} WHERE id_key IN (SELECT {ID_KEY} FROM {source})")
        # Not in a finally: a DELETE that failed (ran out of memory) leaves the transaction
        # aborted, where DuckDB refuses to unregister, and that error replaced the first, so
        # the write was not made again at the full limit (a resource hunt); the transaction's
        # end unregisters it (_write_transaction).
        if source == BATCH_MAYBE:
            con.unregister(BATCH_MAYBE)

    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            raise EventStoreError("the event store is closed")
        return self._con

    def _planned_windows(
        self, cursor: duckdb.DuckDBPyConnection, params: dict[str, object]
    ) -> Iterator[tuple[dict[str, object], int]]:
        """The export's time windows as the parameters of each (``params`` plus ``low`` and
        ``high``) and its number of events, planned from per-hour counts; see
        :meth:`export_batches`. Call it inside the snapshot every window reads."""
        hours = fetch_all(cursor, EXPORT_PLAN, params)
        for low, high, rows in export_windows(hours, self._window_rows) if hours else ():
            window = params | {
                "low": utc_text(micros_to_datetime(low)),
                "high": params["end"] if high is None else utc_text(micros_to_datetime(high)),
            }
            yield window, rows

    def _export(
        self, query: EventQuery, params: dict[str, object], schema: pa.Schema, batch_rows: int
    ) -> Iterator[pa.RecordBatch]:
        if not (query.package_ids or query.pixel_ids):
            return
        names = list(schema.names)
        fetched = [*names, *(key for key in SORT_KEYS if key not in names)]
        listed = ", ".join(f"e.{quoted(name)}" for name in fetched)
        statement = f"SELECT {listed} {selected_from(fetched)}{SELECTED_WHERE} {IN_WINDOW}"
        # One snapshot for the plan and every window.
        with self._snapshot_readers(query, 1) as (cursor,):
            for window, rows in self._planned_windows(cursor, params):
                if rows > self._window_rows:  # one hour holds more: DuckDB sorts (and spills)
                    ordered = f"{statement} ORDER BY e.time, e.id"
                    reader = cursor.sql(ordered, params=window).to_arrow_reader(batch_rows)
                    try:
                        for batch in reader:
                            yield batch.select(names).cast(schema)
                    finally:
                        reader.close()
                    continue
                table = cursor.sql(statement, params=window).to_arrow_table()
                table = table.sort_by([("time", "ascending"), ("id", "ascending")])
                for batch in table.select(names).to_batches(max_chunksize=batch_rows):
                    yield batch.cast(schema)  # time's zone: DuckDB's name for UTC is Etc/UTC
                del table

    def _export_csv(
        self,
        query: EventQuery,
        params: dict[str, object],
        layout: CsvLayout,
        package_names: Mapping[str, str],
        chunk_rows: int,
    ) -> Iterator[bytes]:
        if not (query.package_ids or query.pixel_ids):
            return
        names = ""
        if any(column.package_name for column in layout.columns):
            names = (
                f"LEFT JOIN {NAMES_VIEW} n ON e.package_id = n.id "
                f"LEFT JOIN {NAMES_VIEW} pn ON e.pixel_id = pn.id "
            )
        texts = DimensionTexts(layout)
        statement = (
            f"SELECT e.time AS {SORT_TIME}, {row_value('id', 'e')} AS {SORT_ID}, "
            f"{texts.line} AS {LINE} "
            f"FROM {ROWS_TABLE} e {texts.joins}"
            f"LEFT JOIN {PACKAGES_VIEW} p ON e.package_id = p.id "
            f"LEFT JOIN {PIXELS_VIEW} x ON e.pixel_id = x.id "
            f"{names}{SELECTED_WHERE} {IN_WINDOW}"
        )
        ordered = f"{statement} ORDER BY {SORT_TIME}, {SORT_ID}"
        with self._snapshot_readers(query, self._export_workers) as cursors:
            tables = texts.tables(cursors[0], params)  # the export's snapshot
            for cursor in cursors:
                for name, table in tables.items():
                    cursor.register(name, table)
                if names:
                    cursor.register(NAMES_VIEW, names_table(package_names))
            waiting = deque(self._planned_windows(cursors[0], params))
            if self._scattered(cursors[0], waiting):
                everything = params | {"low": params["start"], "high": params["end"]}
                yield from sorted_by_duckdb(cursors[0], ordered, everything, chunk_rows)
                return
            sorted_windows: WindowPipeline[pa.Array] = WindowPipeline(cursors)

            def start_windows() -> None:
                """Start the next windows on the free cursors (not an hour with more events
                than a window: that one runs alone)."""
                while waiting and not sorted_windows.full and waiting[0][1] <= self._window_rows:
                    sorted_windows.submit(sorted_window, statement, waiting.popleft()[0])

            try:
                start_windows()
                while sorted_windows.running or waiting:
                    if sorted_windows.running:
                        finished = sorted_windows.take_oldest()
                        start_windows()  # before handing this one on, so that they overlap
                        yield from chunks_of(finished, chunk_rows)
                        continue
                    # An hour with more events than a window: DuckDB sorts it (and spills).
                    window, _ = waiting.popleft()
                    yield from sorted_by_duckdb(cursors[0], ordered, window, chunk_rows)
                    start_windows()
            finally:
                sorted_windows.stop()

    def _scattered(
        self, cursor: duckdb.DuckDBPyConnection, windows: Sequence[tuple[dict[str, object], int]]
    ) -> bool:
        """Whether the export's events are scattered over the file (imported out of time
        order), found by timing a count of the first window's events: DuckDB skips the row
        groups whose times are all outside a window, so a count over clustered events takes
        time in proportion to them, over scattered ones to the whole table. Then every window
        would read the whole table again, and one sorted query reads it once instead (on 10M
        events in random order: 7.9 s in windows, 4.2 s as one query; in time order 1.2-1.6 s
        in windows, 2.2 s as one query)."""
        if len(windows) < 2:
            return False
        window, rows = windows[0]
        started = time.perf_counter()
        fetch_all(cursor, WINDOW_COUNT, window)
        return time.perf_counter() - started > rows * self._scattered_seconds

    @contextlib.contextmanager
    def _snapshot_readers(
        self, query: EventQuery, count: int
    ) -> Iterator[list[duckdb.DuckDBPyConnection]]:
        """``count`` cursors with the query's selection tables registered, each in a read
        transaction of its own, all on one snapshot, so that they can share one export's
        windows. DuckDB takes a transaction's snapshot when it first reads a table, not at
        BEGIN; every cursor reads one here while holding the lock under which ``write_batch``
        begins and commits, so no write can commit between them."""
        if not self._shared.reads.acquire(timeout=READ_WAIT_SECONDS):
            raise StoreBusy(
                f"the embedded event store answered other exports and aggregates for "
                f"{READ_WAIT_SECONDS:.0f} s, one at a time: try again"
            )
        cursors: list[duckdb.DuckDBPyConnection] = []
        reading = False
        try:
            with self._lock:
                connection = self._connection()
                cursors.extend(file_cursor(connection) for _ in range(count))
                self._pool.read_started(cursors[0])  # the full memory limit, before any read
                reading = True
                for cursor in cursors:
                    fetch_all(cursor, "BEGIN TRANSACTION")
                    fetch_all(cursor, f"SELECT count(*) FROM {EVENTS_TABLE} WHERE false")
            for cursor in cursors:
                for name, table in selection_tables(query).items():
                    cursor.register(name, table)
            yield cursors
        finally:
            for cursor in cursors:
                cursor.close()
            if reading:
                self._pool.read_ended()
            self._shared.reads.release()

    def _aggregates(
        self, query: EventQuery, kinds: Sequence[tuple[Rollup, str]], params: dict[str, object]
    ) -> Iterator[tuple[Rollup, AggregateRow]]:
        """Every aggregate of ``kinds`` counted in one snapshot: a request's breakdowns then
        count the same events, though imports commit while they are counted."""
        if not (query.package_ids or query.pixel_ids):
            return
        with self._snapshot_readers(query, self._export_workers) as cursors:
            for rollup, breakdown in kinds:
                for row in self._aggregate_in_parts(cursors, query, rollup, breakdown, params):
                    yield rollup, row

    def _variable_items(
        self,
        cursors: Sequence[duckdb.DuckDBPyConnection],
        rollup: Rollup,
        params: dict[str, object],
    ) -> str:
        """by-variable's items (see ``BY_VARIABLE``), with those that hold an escape decoded
        in Python and registered on every cursor (read in the cursors' snapshot: an item
        imported meanwhile is not left undecoded)."""
        items = ITEMS.format(period=PERIODS[rollup], artifact=ARTIFACT)
        escaped = fetch_all(cursors[0], ESCAPED_ITEMS.format(items=items), params)
        pairs = [variable_pair(row[0]) for row in escaped]
        decoded = pa.table(
            {
                "item": pa.array([row[0] for row in escaped], pa.string()),
                "variable": pa.array([pair[0] for pair in pairs], pa.string()),
                "value": pa.array([pair[1] for pair in pairs], pa.string()),
            }
        )
        for cursor in cursors:
            cursor.register(ITEMS_VIEW, decoded)
        return items

    def _aggregate_in_parts(
        self,
        cursors: list[duckdb.DuckDBPyConnection],
        query: EventQuery,
        rollup: Rollup,
        breakdown: str,
        params: dict[str, object],
    ) -> Iterator[AggregateRow]:
        """The aggregate counted in parts of its range cut where periods begin, on a few
        cursors of one snapshot (``cursors``), side by side: one query runs on one thread (see
        :func:`default_export_workers`). The parts are planned from the range's events per
        hour, so that each counts at most ``aggregate_events`` events (a period with more is
        counted in shards of its origins, side by side too): a part's table of distinct
        origins then fits the buffer pool however long the range (before, the range was cut
        in as many parts as cursors, and a year of 10M events by month and client needed more
        than 64 MB). Each part's rows come out in order and after the previous part's."""
        hours = fetch_all(cursors[0], EXPORT_PLAN, params)
        artifacts: list[str] | None = None  # by-variable's rows name their artifacts
        statements: dict[bool, str]  # whole parts (False) and shards (True)
        if breakdown == "by-variable":
            items = self._variable_items(cursors, rollup, params)
            statements = {
                sharded: BY_VARIABLE.format(items=items, in_shard=shard_condition("i", sharded))
                for sharded in (False, True)
            }
        else:
            statements = {s: aggregate_sql(rollup, breakdown, s) for s in (False, True)}
            artifacts = sorted_artifacts(query)
        parts = plan_counted_parts(
            hours,
            query.start,
            query.end,
            rollup,
            budget=self._aggregate_events,
            workers=len(cursors),
        )
        counted: WindowPipeline[pa.Table] = WindowPipeline(cursors)
        shards = deque(
            (
                statements[part.shards > 1],
                params
                | {"start": utc_text(part.low), "end": utc_text(part.high)}
                | ({"shards": part.shards, "shard": shard} if part.shards > 1 else {}),
            )
            for part in parts
            for shard in range(part.shards)
        )

        def start_shards() -> None:
            while shards and not counted.full:
                counted.submit(counted_shard, *shards.popleft())

        try:
            start_shards()
            for part in parts:  # its shards finish in the order they started
                tables = []
                for _ in range(part.shards):
                    tables.append(counted.take_oldest())
                    start_shards()  # before handing this one on, so that they overlap
                table = tables[0] if len(tables) == 1 else added_up(tables)
                for batch in table.to_batches():
                    yield from aggregate_rows(batch, breakdown, artifacts)
        finally:
            counted.stop()

    def _before_commit(self) -> None:
        """Runs inside ``write_batch``'s transaction after every write; tests make it fail."""


class _SharedFile:
    """What the store objects of one file in this process share: the database (the first
    object's connection, which each object takes a cursor of: a file is attached once per
    process), the lock that makes writes one transaction at a time, and the filter of stored
    ids, which must see every write. The first object's settings are the database's."""

    def __init__(self, name: str, database: duckdb.DuckDBPyConnection) -> None:
        self.name = name
        self.database = database
        self.lock = threading.Lock()
        self.ids: IdFilter | None = None  # built on first use, under the lock
        self.pool: PoolLimit | None = None  # the database's memory limit now
        # Place and agent keys this process has committed to the file (by table).
        self.known = {table: KnownKeys() for table, _, _ in DIMENSION_TABLES}
        self.users = 0
        # One export or aggregate at a time: each may use the whole memory limit (its parts
        # and windows are sized as if it ran alone). Side by side, requests that fit alone ran
        # out of it: 19 of 20 concurrent ones answered 503 at 128 MB, and a CSV ended midway.
        self.reads = threading.BoundedSemaphore(1)


_SHARED_FILES: dict[str, _SharedFile] = {}
_SHARED_LOCK = threading.Lock()


def _share_file(
    path: Path, config: Config, row_group_rows: int
) -> tuple[_SharedFile, duckdb.DuckDBPyConnection]:
    """The file's shared state, opening it with ``config`` if this process has not, and a
    cursor of its database for one store object."""
    name = str(path.resolve())
    with _SHARED_LOCK:
        shared = _SHARED_FILES.get(name)
        if shared is None:
            database = open_file(path, config, row_group_rows)
            shared = _SHARED_FILES[name] = _SharedFile(name, database)
        cursor = file_cursor(shared.database)
        shared.users += 1
        return shared, cursor


def _unshare_file(shared: _SharedFile) -> None:
    """The last user gone, the file is closed (DuckDB folds its log into it) and its state
    goes too: another process may change the file before it is opened here again."""
    with _SHARED_LOCK:
        shared.users -= 1
        if shared.users == 0:
            _SHARED_FILES.pop(shared.name, None)
            shared.database.close()


# How long an export or aggregate waits for the one before it (see _SharedFile.reads).
READ_WAIT_SECONDS = 60.0
