"""The event store in PostgreSQL (psycopg 3), for deployments that outgrow the embedded one.

Layout:

* ``events``: the columns of :data:`~eventport.events.schema.COLUMNS`, range-partitioned by
  ``time`` into monthly partitions ``events_pYYYYMM``, created on demand for the months a batch
  touches (in a short transaction of their own, under an advisory lock, before the batch's
  transaction), plus ``events_default``, which refuses every row (``CHECK (false)``): a month
  whose partition this process believes made but which is gone (dropped by an operator, say)
  fails the copy instead of landing there unseen, and the store makes the partition again
  (rows in the default partition would stop that month's partition from ever being attached).
  A partition is created
  as a table and then attached, which does not wait for queries on ``events`` (it does lock
  ``events_default``, which reads therefore never touch: they name the partitioned months).
* ``event_ids``: the key of every stored event (a uuid: the MD5 of its owner's id, a NUL and its
  id, as the embedded store's ``id_key``), unpartitioned, its primary key. It answers "which of
  these ids exist" and finds the ids a batch replaces, one index probe an id. The partitions
  cannot: an id's month is not known beforehand, so each partition's index was searched for
  every id of every batch (measured with 12 months stored: 1.3 s a batch of 61,440 for the
  look-up, and as much again for the delete). Stores made before it get it filled from their
  events by ``setup``.
* A hash index on ``id``, inherited by every partition, finds the events to delete once
  ``event_ids`` has named them (the delete's ``owner_id`` filter is checked on the rows). It
  cannot be unique: a unique index on a partitioned table must include the partition key.
  Uniqueness per owner comes from ``write_batch`` deleting, under a per-owner advisory lock,
  every event of the batch's ids but the batch's own (batches of different owners are written
  in parallel; one owner's take turns).
  A B-tree on ``owner_id`` alone lets reads find a small tenant's events without scanning
  its months' partitions whole; it costs little to keep (one key repeated: PostgreSQL stores
  the row pointers of a key together). The two replaced one B-tree on ``(owner_id, id)``
  (see ``_INDEXES``); ``setup`` makes them on older stores and drops that one.
* ``event_import_checkpoints``: one row per import, upserted in the batch's transaction.

The names stay clear of the control store's tables, so both can share one database.

Batches are written with ``COPY … FROM STDIN`` in CSV that Arrow writes (C++, no Python object
per value), in two steps an import overlaps (``StagedWrites``): the rows copied in a transaction
left open (``stage_batch``), while the batch before commits on another connection; then the ids
added, the replaced events deleted, the checkpoint upserted and the commit (``commit_staged``).
One backend doing all of a batch left a core idle a third of the time (docs/performance.md).
Connections come from a small built-in pool (idle connections kept for reuse); each call holds
one for its duration (a staged batch, until its commit), so threads write in parallel.

Exports and aggregates read in a read-only, repeatable-read transaction. An export is a
``COPY (SELECT … ORDER BY time, id) TO STDOUT`` in CSV, ``batch_rows`` rows at a time parsed by
Arrow (2-3x the rows/s of a server-side cursor's Python tuples); aggregates are computed in SQL
at query time and fetched through a server-side cursor. The selected artifacts travel as array
parameters. The decoding of ``variables`` items with an escape is done in Python
(:func:`~eventport.export.query.variable_pair`, as DuckDB does) and joined in as ``bytea``: a
decoded ``%00`` is a NUL, which PostgreSQL text cannot hold.
"""

from __future__ import annotations

import io
import logging
import re
import struct
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from psycopg import sql
from psycopg.abc import Buffer
from psycopg.adapt import Dumper
from psycopg.pq import Format

from eventport.events.keys import RecentIdKeys
from eventport.events.schema import COLUMN_NAMES, COLUMNS, Batch, Checkpoint, ColumnType
from eventport.events.store import (
    CHECKPOINT_FIELDS,
    CHECKPOINTS_TABLE,
    COUNTED_SQL,
    EVENTS_TABLE,
    STORED_TARGETS_SCHEMA,
    BreakdownSql,
    EventStoreError,
    PreparedBatch,
    StoreCapabilities,
    WriteInterrupted,
    batch_table,
    distinct_texts,
    one_aggregate,
    periods_sql,
)
from eventport.export.csv import CsvLayout, csv_lines
from eventport.export.query import (
    AggregateRow,
    EventQuery,
    Rollup,
    check_aggregate,
    export_schema,
    variable_pair,
)
from eventport.positions import int64_values

log = logging.getLogger(__name__)

_SQL_TYPES: dict[ColumnType, str] = {
    "text": 'text COLLATE "C"',  # byte order: cheaper comparisons, the same order as DuckDB
    "bigint": "int8",
    "integer": "int4",
    "double": "float8",
    "boolean": "bool",
    "timestamp": "timestamptz",
}
_COPY_CHUNK = 1 << 20
_UUID_OID, _UUID_ARRAY_OID = 2950, 2951  # PostgreSQL's built-in type ids of uuid and uuid[]
_DEFAULT_PARTITION = f"{EVENTS_TABLE}_default"
_REFUSES_ROWS = f"{_DEFAULT_PARTITION}_refuses_rows"  # its CHECK (false) (module docstring)
# The events' indexes (see the module docstring), as (name, method and columns). They cost
# rows ~20% less to keep than the one B-tree on (owner_id, id) they replaced, whose keys (two
# texts, ~90 bytes) land all over it: 1M rows, 20 COPYs of 50,000 each in id order,
# 5.0-5.1 s against 5.5-5.6 s (no index: 3.2 s; the hash index alone 4.3-4.5 s). In the
# server, interleaved (bench/ingest.py's files): a 1M enriched import 11.82-12.13 s against
# 12.39-12.77 s, a 500k re-import (every event replaced) 9.61-9.84 s against 10.18-10.52 s.
_INDEXES = (
    (f"{EVENTS_TABLE}_id_idx", "USING hash (id)"),
    (f"{EVENTS_TABLE}_owner_id_idx", "(owner_id)"),
)
_OLD_INDEX = f"{EVENTS_TABLE}_owner_id_id_idx"  # dropped by setup once the two are made
# pg_advisory_xact_lock keys: schema changes, partition creation ("evstore" / "evparts"), and
# the class of the per-owner write locks ("evow"; two-int4 keys, a separate key space).
_SETUP_LOCK = 0x65767374_6F7265
_PARTITION_LOCK = 0x65767061_727473
_OWNER_LOCK = 0x65766F77
# How long a batch's transaction may sit idle between its statements, once it holds the
# owner's lock, before PostgreSQL ends it. A healthy worker's commit runs its statements one
# after the other; a worker that froze (stopped, swapping, its host cut off) held the
# owner's lock for as long as it stayed frozen, and the worker that took its import over
# waited on that lock forever, its heartbeat keeping the import running. Not set on exports:
# a slow client holds their snapshot between slices (SEND_TIMEOUT_SECONDS bounds that).
WRITE_IDLE_SECONDS = 120


_T = sql.Identifier(EVENTS_TABLE)
_C = sql.Identifier(CHECKPOINTS_TABLE)
EVENT_IDS_TABLE = "event_ids"
# The batch's id keys (see event_ids in the module docstring), computed in Python (events/keys.py,
# the C extension: ~0.1 us an id; PostgreSQL's md5 of the texts took ~2.5 us), numbered from 1.
_BATCH_KEYS = "unnest(%(keys)b::uuid[]) WITH ORDINALITY AS b(key, n)"
_FIND_IDS = f"SELECT b.n FROM {_BATCH_KEYS} JOIN {EVENT_IDS_TABLE} k ON k.key = b.key"
# The look-up by key is one index probe a key. At the default random_page_cost (4) the planner
# chose instead to hash the whole table, a cost that grows with the events stored: with 1.8M
# keys, 0.50-0.56 s a batch of 61,440 against 0.22 s probing. 1.1 is what the pages of an
# index probed this way cost: cached, or on SSD.
_PROBE_KEYS = "SET LOCAL random_page_cost = 1.1"
# A batch's keys are added in one pass over the index, which finds the ones stored already
# (the ids the batch replaces) as it goes: their numbers are the answer. A delete of the
# stored keys first and an insert of all of them after took ~0.3 s a batch more. The keys go
# in in key order, so that the index's pages are met in order, each once a batch: inserting
# 21,700 random keys into an index of 1M took 126 ms instead of 144-150 ms after a checkpoint
# (EXPLAIN ANALYZE), and a 1M enriched import over HTTP 12.12-12.30 s instead of 13.01-13.18 s
# (three interleaved pairs). Probing in key order for stored_ids (_FIND_IDS) gained nothing.
_ADD_IDS = (
    f"WITH added AS (INSERT INTO {EVENT_IDS_TABLE} (key) SELECT DISTINCT b.key FROM {_BATCH_KEYS} "
    f"ORDER BY b.key ON CONFLICT (key) DO NOTHING RETURNING key) "
    f"SELECT b.n FROM {_BATCH_KEYS} WHERE NOT EXISTS (SELECT FROM added a WHERE a.key = b.key)"
)
# The stored events of ids a batch replaces. The batch's own rows, copied first in the same
# transaction (stage_batch), carry its ids too: a row this transaction wrote has its id as xmin.
# (A frozen row keeps its xmin, so one of the same import written exactly 2^32 transactions
# earlier would look like one of the batch's own: the import id has to match as well.)
_DELETE_REPLACED = sql.SQL(
    "DELETE FROM {} WHERE owner_id = %s AND id = ANY(%b) "
    "AND NOT (xmin = pg_current_xact_id()::xid AND import_id = ANY(%s))"
).format(_T)
_STORED_TARGETS = sql.SQL(
    "SELECT id, package_id, pixel_id FROM {} WHERE owner_id = %s AND id = ANY(%b)"
).format(_T)
_FILL_IDS = (
    f"INSERT INTO {EVENT_IDS_TABLE} (key) SELECT DISTINCT "
    "md5(convert_to(owner_id, 'UTF8') || '\\x00'::bytea || convert_to(id, 'UTF8'))::uuid "
    f"FROM {EVENTS_TABLE}"
)
# The events of deleted packages and pixels, and their keys (as _FILL_IDS makes them).
_DELETE_EVENTS = sql.SQL(
    "WITH gone AS (DELETE FROM {} WHERE owner_id = %s "
    "AND (package_id = ANY(%s) OR pixel_id = ANY(%s)) RETURNING owner_id, id), "
    "freed AS (DELETE FROM {} WHERE key IN (SELECT md5(convert_to(owner_id, 'UTF8') "
    "|| '\\x00'::bytea || convert_to(id, 'UTF8'))::uuid FROM gone) RETURNING 1) "
    "SELECT count(*) FROM gone"
).format(_T, sql.Identifier(EVENT_IDS_TABLE))
_COLUMNS_SQL = sql.SQL(", ").join(sql.Identifier(n) for n in COLUMN_NAMES)
_CHECKPOINT_COLUMNS = sql.SQL(", ").join(sql.Identifier(f) for f in CHECKPOINT_FIELDS)
_UPSERT_CHECKPOINT = sql.SQL(
    "INSERT INTO {table} ({columns}, updated_at) VALUES ({values}, now()) "
    "ON CONFLICT (import_id) DO UPDATE SET {updates}, updated_at = excluded.updated_at"
).format(
    table=_C,
    columns=_CHECKPOINT_COLUMNS,
    values=sql.SQL(", ").join(sql.Placeholder() for _ in CHECKPOINT_FIELDS),
    updates=sql.SQL(", ").join(
        sql.SQL("{0} = excluded.{0}").format(sql.Identifier(f)) for f in CHECKPOINT_FIELDS[1:]
    ),
)


# -- export and aggregates -------------------------------------------------------------------------

# Exports leave PostgreSQL as CSV (COPY … TO STDOUT) parsed by Arrow: ~2.5x the rows/s of
# fetching rows through a server-side cursor into Python objects (bench/export_store.py).

# The query's events: one owner, start <= time < end, of the selected packages or pixels, and
# (so that the planner prunes the default partition, which the store keeps empty, and never
# locks it: attaching a partition needs it) inside the months that have a partition.
# ``artifact`` is the package when selected, else the pixel's artifact.
_FROM = (
    f"FROM {EVENTS_TABLE} e "
    "LEFT JOIN unnest(%(pixels)s::text[], %(pixel_artifacts)s::text[]) AS x(id, artifact) "
    "ON e.pixel_id = x.id "
)
_WHERE = (
    "WHERE e.owner_id = %(owner)s AND e.time >= %(start)s AND e.time < %(end)s "
    "AND (e.package_id = ANY(%(packages)s::text[]) OR e.pixel_id = ANY(%(pixels)s::text[]))"
)
_ARTIFACT = (
    "CASE WHEN e.package_id = ANY(%(packages)s::text[]) THEN e.package_id "
    'ELSE x.artifact COLLATE "C" END'
)
_UTC = "(e.time AT TIME ZONE 'UTC')"
_PERIODS = periods_sql(_UTC)
_ITEMS_JOIN = "CROSS JOIN LATERAL unnest(string_to_array(e.variables, '&')) AS i(item) "
_ESCAPED_ITEMS = (
    "SELECT DISTINCT item FROM ({items}) i WHERE strpos(item, '%%') > 0 OR strpos(item, '+') > 0"
)
_SPLIT_VARIABLE = (
    "CASE WHEN strpos(i.item, '=') > 0 THEN left(i.item, strpos(i.item, '=') - 1) ELSE i.item END"
)
_SPLIT_VALUE = (
    "CASE WHEN strpos(i.item, '=') > 0 THEN substr(i.item, strpos(i.item, '=') + 1) ELSE '' END"
)
# Decoded pairs are bytea (a decoded %00 is a NUL); bytea order is the byte order of DuckDB's.
# The events' items are a subquery of their own (OFFSET 0 keeps the planner from folding it
# in): folded, the join to the decoded items ran inside the loop over each event's items,
# unnesting them once per event: 25 events with 1,000 %-escaped values took a 3-day aggregate
# of 300,000 events from ~5 s to ~35 s (a live probe saw 11 s become 70 s).
_BY_VARIABLE = (
    "SELECT d, artifact, variable, value, count(DISTINCT id), count(DISTINCT origin_id) "
    "FROM (SELECT i.d, i.artifact, i.id, i.origin_id, "
    f"coalesce(m.variable, convert_to({_SPLIT_VARIABLE}, 'UTF8')) AS variable, "
    f"coalesce(m.value, convert_to({_SPLIT_VALUE}, 'UTF8')) AS value "
    "FROM ({items} OFFSET 0) i LEFT JOIN unnest(%(items)s::text[], %(variables)s::bytea[], "
    "%(values)s::bytea[]) AS m(item, variable, value) ON m.item = i.item) s "
    "GROUP BY d, artifact, variable, value ORDER BY d, artifact, variable, value"
)


def _selection(ranges: int, join: str = "") -> str:
    """FROM … WHERE of the query's events, within ``ranges`` partitioned time ranges."""
    inside = " OR ".join(f"(e.time >= %(low{i})s AND e.time < %(high{i})s)" for i in range(ranges))
    return f"{_FROM}{join}{_WHERE} AND ({inside})"


def _items_sql(rollup: Rollup, ranges: int) -> str:
    """by-variable: one row per non-empty item of a counted event's ``variables``."""
    return (
        f"SELECT {_PERIODS[rollup]} AS d, {_ARTIFACT} AS artifact, e.id, e.origin_id, i.item "
        f"{_selection(ranges, _ITEMS_JOIN)} AND {COUNTED_SQL} AND e.variables <> '' "
        "AND i.item <> ''"
    )


def _aggregate_sql(rollup: Rollup, breakdown: str, ranges: int) -> str:
    sql = BreakdownSql.of(breakdown)
    return (
        f"SELECT {sql.keys}, count(*), count(DISTINCT origin_id) FROM ("
        f"SELECT {_PERIODS[rollup]} AS d, {_ARTIFACT} AS artifact, e.origin_id{sql.select} "
        f"{_selection(ranges)} AND {sql.counted}) s GROUP BY {sql.keys} ORDER BY {sql.order}"
    )


def _selection_params(query: EventQuery) -> dict[str, Any]:
    for moment in (query.start, query.end):
        if moment.tzinfo is None:
            raise ValueError(f"query times must be aware (UTC), not {moment!r}")
    pixels = sorted(set(query.pixel_ids))
    return {
        "owner": query.owner_id,
        "start": query.start,
        "end": query.end,
        "packages": sorted(set(query.package_ids)),
        "pixels": pixels,
        "pixel_artifacts": [query.pixel_artifacts.get(pixel, pixel) for pixel in pixels],
    }


def _csv_batches(lines: list[Buffer], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """Arrow batches from lines of PostgreSQL's CSV: NULL is an unquoted empty field, an empty
    string a quoted one; booleans are t/f; time arrives as the UTC wall clock (naive)."""
    types = {f.name: pa.timestamp("us") if f.name == "time" else f.type for f in schema}
    table = pacsv.read_csv(
        pa.py_buffer(b"".join(lines)),
        # Parsed in 1 MB blocks (faster than one big block), joined into one batch after.
        read_options=pacsv.ReadOptions(
            column_names=schema.names, use_threads=False, block_size=1 << 20
        ),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types=types,
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            true_values=["t"],
            false_values=["f"],
        ),
    )
    for batch in table.combine_chunks().to_batches():
        yield batch.cast(schema)  # the naive UTC time becomes timestamp[us, tz=UTC]


_PARTITION_NAME = re.compile(rf"{EVENTS_TABLE}_p(\d{{4}})(\d{{2}})")


def partition_name(year: int, month: int) -> str:
    return f"{EVENTS_TABLE}_p{year:04d}{month:02d}"


def _month_bounds(year: int, month: int) -> tuple[str, str]:
    end = (year + 1, 1) if month == 12 else (year, month + 1)
    return f"{year:04d}-{month:02d}-01 00:00:00+00", f"{end[0]:04d}-{end[1]:02d}-01 00:00:00+00"


def _partitioned_ranges(
    months: list[tuple[int, int]], start: datetime, end: datetime
) -> list[tuple[datetime, datetime]]:
    """The time ranges of consecutive partitioned ``months`` (sorted) that meet
    ``[start, end)``. Events exist only there: a batch makes its months' partitions first."""
    ranges: list[tuple[datetime, datetime]] = []
    for year, month in months:
        low = datetime(year, month, 1, tzinfo=UTC)
        high = (
            datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
            if year < 9999 or month < 12
            else None
        )
        if (high is not None and high <= start) or low >= end:
            continue
        high = high or end
        if ranges and ranges[-1][1] == low:
            ranges[-1] = (ranges[-1][0], high)
        else:
            ranges.append((low, high))
    return ranges


Connection = psycopg.Connection[tuple[Any, ...]]


class _Connections:
    """A minimal pool: idle autocommit connections kept for reuse, at most ``max_idle``."""

    def __init__(self, conninfo: str, max_idle: int = 4) -> None:
        self._conninfo = conninfo
        self._max_idle = max_idle
        self._idle: list[Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        conn = self.take()
        healthy = False
        try:
            yield conn
            healthy = True
        except GeneratorExit:  # a stream closed early: the connection is fine once idle again
            healthy = True
            raise
        finally:
            self.give_back(conn, healthy)

    def take(self) -> Connection:
        """A connection for the caller alone until :meth:`give_back`."""
        conn = self._idle_alive()
        if conn is None:
            conn = psycopg.connect(
                self._conninfo,
                autocommit=True,
                application_name="eventport events",
                # The server notices a client host that went away within ~a minute (its
                # default, the system's: two hours), and ends what that session held.
                options=(
                    "-c TimeZone=UTC -c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 "
                    "-c tcp_keepalives_count=3"
                ),
            )
        return conn

    def give_back(self, conn: Connection, healthy: bool) -> None:
        """Keep ``conn`` for reuse if it is ``healthy`` and idle (no transaction open), else
        close it."""
        idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        keep = healthy and idle and not conn.closed
        with self._lock:
            keep = keep and not self._closed and len(self._idle) < self._max_idle
            if keep:
                self._idle.append(conn)
        if not keep:
            conn.close()

    def _idle_alive(self) -> Connection | None:
        """An idle connection the server still serves, or None. The server may have ended any
        of them while they waited (a restart, a failover, an administrator): one round trip
        each (~0.1 ms against a batch's tens) finds out before a statement of ours fails."""
        while True:
            with self._lock:
                if self._closed:
                    raise EventStoreError("the event store is closed")
                if not self._idle:
                    return None
                conn = self._idle.pop()
            try:
                conn.execute("SELECT 1")
                return conn
            except psycopg.Error:
                conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


@dataclass
class _Rows:
    """A prepared batch (:meth:`PostgresEventStore.prepare_batch`): its ids in the batch's
    order, their keys as _ADD_IDS takes them, the (year, month) partitions it needs and its rows
    as CSV for COPY (empty for a batch of no events)."""

    ids: pa.Array
    keys: dict[str, _UuidArray]
    months: set[tuple[int, int]]
    data: bytes
    import_ids: list[str]  # of the rows: with the transaction, what tells its own rows


class _Staged(PreparedBatch):
    """A batch whose rows a transaction holds, uncommitted, on a connection of its own
    (:meth:`PostgresEventStore.stage_batch`): taken once, as ``(connection, rows)``, by its
    commit or discard."""


class PostgresEventStore:
    """The event store in a PostgreSQL database; see the module docstring."""

    capabilities = StoreCapabilities(
        backend="postgresql",
        multi_process=True,
        parallel_writes=True,
        time_partitions=True,
        preferred_batch_rows=50_000,
        text_allows_nul=False,
        staged_writes=True,
    )

    def __init__(self, conninfo: str, *, max_idle_connections: int = 4) -> None:
        """``conninfo``: a libpq URL (``postgresql://…``) or key=value string."""
        self._pool = _Connections(conninfo, max_idle_connections)
        self._partitions: set[tuple[int, int]] = set()
        self._partitions_lock = threading.Lock()
        self._id_keys = RecentIdKeys()  # stored_ids' keys, found again by write_batch
        # The connections staging or committing each owner's batches, for interrupt_writes.
        self._writing: dict[str, set[Connection]] = {}
        self._writing_lock = threading.Lock()
        # Connections a cancel was sent to: closed when given back, never reused, so that a
        # cancel that arrives late hits no other statement.
        self._cancelled: set[Connection] = set()

    # -- the interface -------------------------------------------------------------------------

    def setup(self) -> None:
        columns = sql.SQL(", ").join(self._column_sql(c.name, c.type, c.nullable) for c in COLUMNS)
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SETUP_LOCK,))
            conn.execute(
                sql.SQL("CREATE TABLE IF NOT EXISTS {} ({}) PARTITION BY RANGE ({})").format(
                    _T, columns, sql.Identifier("time")
                )
            )
            existing = {
                row[0]
                for row in conn.execute(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_schema = current_schema() AND table_name = %s",
                    (EVENTS_TABLE,),
                )
            }
            for column in COLUMNS:  # columns added to the schema since the table was created
                if column.name not in existing:
                    if not column.nullable:
                        raise EventStoreError(f"cannot add required column {column.name!r}")
                    conn.execute(
                        sql.SQL("ALTER TABLE {} ADD COLUMN {}").format(
                            _T, self._column_sql(column.name, column.type, True)
                        )
                    )
            conn.execute(
                sql.SQL("CREATE TABLE IF NOT EXISTS {} PARTITION OF {} DEFAULT").format(
                    sql.Identifier(_DEFAULT_PARTITION), _T
                )
            )
            refusing = conn.execute(
                "SELECT 1 FROM pg_constraint WHERE conrelid = %s::regclass AND conname = %s",
                (_DEFAULT_PARTITION, _REFUSES_ROWS),
            ).fetchone()
            if refusing is None:  # NOT VALID: an older store's rows there are not checked
                conn.execute(
                    sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK (false) NOT VALID").format(
                        sql.Identifier(_DEFAULT_PARTITION), sql.Identifier(_REFUSES_ROWS)
                    )
                )
            for name, definition in _INDEXES:  # an older store's: minutes for many events
                conn.execute(
                    sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} {}").format(
                        sql.Identifier(name), _T, sql.SQL(definition)
                    )
                )
            conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(_OLD_INDEX)))
            if conn.execute("SELECT to_regclass(%s)", (EVENT_IDS_TABLE,)).fetchone() == (None,):
                conn.execute(f"CREATE TABLE {EVENT_IDS_TABLE} (key uuid PRIMARY KEY)")
                conn.execute(_FILL_IDS)  # a store made before the table: its events' keys
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (import_id text PRIMARY KEY, {}, "
                    "updated_at timestamptz NOT NULL)"
                ).format(
                    _C,
                    sql.SQL(", ").join(
                        sql.SQL("{} bigint NOT NULL").format(sql.Identifier(f))
                        for f in CHECKPOINT_FIELDS[1:]
                    ),
                )
            )
            for name in CHECKPOINT_FIELDS[1:]:  # counters added since the table was created
                conn.execute(
                    sql.SQL(
                        "ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} bigint NOT NULL DEFAULT 0"
                    ).format(_C, sql.Identifier(name))
                )
            known = {
                row[0]
                for row in conn.execute(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = %s::regclass",
                    (EVENTS_TABLE,),
                )
            }
        months = (_PARTITION_NAME.fullmatch(name) for name in known)
        with self._partitions_lock:
            self._partitions = {(int(m[1]), int(m[2])) for m in months if m}

    def stored_ids(self, owner_id: str, ids: pa.Array) -> pa.Array:
        if not len(ids):
            return pa.array([], pa.string())
        keys = _keyed(*self._id_keys(owner_id, ids))
        with self._pool.connection() as conn, conn.transaction():
            conn.execute(_PROBE_KEYS)
            found = conn.execute(_FIND_IDS, keys).fetchall()
        return ids.take(pa.array([n - 1 for (n,) in found], pa.int64()))

    def stored_targets(self, owner_id: str, ids: pa.Array) -> pa.Table:
        """See :class:`~eventport.events.store.EventStore`."""
        if not len(ids):
            return STORED_TARGETS_SCHEMA.empty_table()
        with self._pool.connection() as conn:
            rows = conn.execute(_STORED_TARGETS, (owner_id, ids.to_pylist())).fetchall()
        return pa.Table.from_pylist(
            [dict(zip(STORED_TARGETS_SCHEMA.names, row, strict=True)) for row in rows],
            STORED_TARGETS_SCHEMA,
        )

    def delete_events(
        self, owner_id: str, *, package_ids: Sequence[str] = (), pixel_ids: Sequence[str] = ()
    ) -> int:
        """See :class:`~eventport.events.store.EventStore`: the events and their keys in
        ``event_ids``, under the owner's lock (as a batch's commit takes it)."""
        if not package_ids and not pixel_ids:
            return 0
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_OWNER_LOCK, owner_id))
            row = conn.execute(
                _DELETE_EVENTS, (owner_id, list(package_ids), list(pixel_ids))
            ).fetchone()
        return int(row[0]) if row else 0

    def expect_events(self, count: int) -> None:
        """See :class:`~eventport.events.store.EventStore`: PostgreSQL keeps nothing per event
        in this process."""

    def prepare_batch(self, owner_id: str, batch: Batch) -> PreparedBatch:
        """The batch checked, its keys, its months and its rows as COPY's CSV, in time order."""
        table = batch_table(owner_id, batch)
        del batch
        if not table.num_rows:
            empty = _Rows(pa.array([], pa.string()), {}, set(), b"", [])
            return PreparedBatch(self, owner_id, empty)
        # The keys in the batch's own order: found again from stored_ids (events/keys.py).
        ids = table.column("id").combine_chunks()
        keys = _keyed(*self._id_keys(owner_id, ids, last_use=True))
        imports = distinct_texts(table.column("import_id"))
        times = table.column("time")
        months = pc.unique(pc.add(pc.multiply(pc.year(times), 100), pc.month(times)))
        # In time order: each partition's rows come together (and in its heap), a run at a time
        # for COPY. 1M enriched over HTTP, interleaved: 11.18-11.46 s against 12.19-12.27 s in
        # id order (which the hash index on id does not need; unsorted: 11.86-12.13 s), a 500k
        # re-import 9.39-9.52 s against 9.77-10.27 s.
        table = table.take(pc.sort_indices(table, [("time", "ascending")]))
        months_of = {divmod(m, 100) for m in months.to_pylist()}
        rows = _Rows(ids, keys, months_of, _copy_csv(table), imports)
        return PreparedBatch(self, owner_id, rows)

    def write_batch(self, owner_id: str, batch: Batch, checkpoint: Checkpoint) -> None:
        self.commit_staged(self.stage_batch(owner_id, batch), checkpoint)

    def stage_batch(self, owner_id: str, batch: Batch) -> _Staged:
        """See :class:`~eventport.events.store.StagedWrites`: the batch's rows copied in a
        transaction left open on a connection of its own. Nothing here waits for other
        writers: the rows go into ``events`` (no unique index) and nothing else is written."""
        if not isinstance(batch, PreparedBatch):
            batch = self.prepare_batch(owner_id, batch)
        rows: _Rows = batch.take(self, owner_id)
        del batch
        try:
            conn = self._copied(owner_id, rows)
        except psycopg.errors.CheckViolation as exc:
            if exc.diag.constraint_name != _REFUSES_ROWS:
                raise
            # A month this process made a partition for has none now: find out which exist
            # and make the missing ones, once.
            log.warning("a partition of %s was gone; making it again", EVENTS_TABLE)
            with self._partitions_lock:
                self._partitions.difference_update(rows.months)
            conn = self._copied(owner_id, rows)
        rows.data = b""  # PostgreSQL holds the rows: let their text go
        return _Staged(self, owner_id, (conn, rows))

    def _copied(self, owner_id: str, rows: _Rows) -> Connection:
        """A connection whose open transaction holds ``rows`` (their months' partitions made
        first); on failure nothing is left open."""
        if rows.data:
            self._ensure_partitions(rows.months)
        conn = self._pool.take()
        try:
            with self._interruptible(owner_id, conn):
                conn.execute("BEGIN")
                if rows.data:
                    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
                        _T, _COLUMNS_SQL
                    )
                    with conn.cursor() as cur, cur.copy(statement) as copy:
                        view = memoryview(rows.data)
                        for start in range(0, len(rows.data), _COPY_CHUNK):
                            copy.write(view[start : start + _COPY_CHUNK])
        except BaseException:
            self._roll_back(conn)
            raise
        return conn

    @contextmanager
    def _interruptible(self, owner_id: str, conn: Connection) -> Iterator[None]:
        """``conn`` works for the owner's batch meanwhile: :meth:`interrupt_writes` may cancel
        its statement, which then raises :class:`WriteInterrupted`."""
        with self._writing_lock:
            self._writing.setdefault(owner_id, set()).add(conn)
        try:
            yield
        except psycopg.errors.QueryCanceled as exc:
            raise WriteInterrupted(f"a batch of {owner_id} was interrupted") from exc
        finally:
            with self._writing_lock:
                working = self._writing[owner_id]
                working.discard(conn)
                if not working:
                    del self._writing[owner_id]

    def interrupt_writes(self, owner_id: str) -> None:
        """See :class:`~eventport.events.store.StagedWrites`. Under the lock, so that none of
        the connections is given back (and given to another statement) meanwhile."""
        with self._writing_lock:
            for conn in self._writing.get(owner_id, ()):
                self._cancelled.add(conn)
                try:
                    conn.cancel_safe(timeout=2.0)
                except (psycopg.Error, OSError):  # it ended meanwhile, or the server is gone
                    log.debug("could not cancel a write of %s", owner_id, exc_info=True)

    def _give_back(self, conn: Connection, healthy: bool) -> None:
        with self._writing_lock:
            cancelled = conn in self._cancelled
            self._cancelled.discard(conn)
        self._pool.give_back(conn, healthy and not cancelled)

    def commit_staged(self, staged: object, checkpoint: Checkpoint) -> None:
        """See :class:`~eventport.events.store.StagedWrites`. Under the owner's lock: the
        batch's keys added to ``event_ids`` (the stored ones found as they go), the events of
        those ids deleted (all but the batch's own, which this transaction wrote), the
        checkpoint upserted, and the commit."""
        owner_id, conn, rows = self._take_staged(staged)
        values = [getattr(checkpoint, f) for f in CHECKPOINT_FIELDS]
        try:
            with self._interruptible(owner_id, conn), conn.cursor() as cur:
                # One owner's batches take turns: with no unique index, two concurrent batches
                # reusing an id could otherwise both delete nothing and both insert it.
                cur.execute(
                    "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_OWNER_LOCK, owner_id)
                )
                # Only now: a staged batch waits idle for this lock by design, held by the
                # batch before it (a 120 s hold cost a healthy import an attempt).
                idle_ms = int(WRITE_IDLE_SECONDS * 1000)
                cur.execute(f"SET LOCAL idle_in_transaction_session_timeout = {idle_ms}")
                if len(rows.ids):
                    found = cur.execute(_ADD_IDS, rows.keys).fetchall()
                    if found:  # the events of the ids the batch replaces, not its own
                        replaced = rows.ids.take([n - 1 for (n,) in found]).to_pylist()
                        cur.execute(_DELETE_REPLACED, (owner_id, replaced, rows.import_ids))
                cur.execute(_UPSERT_CHECKPOINT, values)
                self._before_commit()
                conn.execute("COMMIT")
        except BaseException:
            self._roll_back(conn)
            raise
        self._give_back(conn, True)

    def discard_staged(self, staged: object) -> None:
        """See :class:`~eventport.events.store.StagedWrites`."""
        _, conn, _ = self._take_staged(staged)
        self._roll_back(conn)

    def _take_staged(self, staged: object) -> tuple[str, Connection, _Rows]:
        """The owner, connection and rows of a batch this store staged, once."""
        if not isinstance(staged, _Staged):
            raise ValueError("not a batch this event store staged")
        conn, rows = staged.take(self, staged.owner_id)
        return staged.owner_id, conn, rows

    def _roll_back(self, conn: Connection) -> None:
        """End ``conn``'s transaction and give it back (closed if it cannot be ended)."""
        idle = psycopg.pq.TransactionStatus.IDLE
        try:
            if not conn.closed and conn.info.transaction_status != idle:
                conn.execute("ROLLBACK")
        except psycopg.Error:
            self._give_back(conn, False)
        else:
            self._give_back(conn, True)

    def export_batches(
        self, query: EventQuery, columns: Sequence[str], *, batch_rows: int = 65_536
    ) -> Iterator[pa.RecordBatch]:
        schema = export_schema(columns)
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be positive, not {batch_rows}")
        params = _selection_params(query)
        return self._export(query, params, schema, batch_rows)

    def export_csv(
        self,
        query: EventQuery,
        layout: CsvLayout,
        package_names: Mapping[str, str] | None = None,
        *,
        chunk_rows: int = 65_536,
    ) -> Iterator[bytes]:
        """See :class:`~eventport.events.store.EventStore`: the batches of
        :meth:`export_batches` written by :func:`~eventport.export.csv.csv_lines` (larger
        chunks by default: each batch is a COPY slice parsed by Arrow)."""
        batches = self.export_batches(query, layout.sources, batch_rows=chunk_rows)
        return csv_lines(batches, layout, package_names)

    def aggregate(
        self, query: EventQuery, rollup: Rollup, breakdown: str
    ) -> Iterator[AggregateRow]:
        return one_aggregate(self, query, rollup, breakdown)

    def aggregates(
        self, query: EventQuery, kinds: Sequence[tuple[Rollup, str]]
    ) -> Iterator[tuple[Rollup, AggregateRow]]:
        for rollup, breakdown in kinds:
            check_aggregate(rollup, breakdown)
        return self._aggregates(query, kinds, _selection_params(query))

    def checkpoint(self, import_id: str) -> Checkpoint | None:
        with self._pool.connection() as conn:
            row = conn.execute(
                sql.SQL("SELECT {} FROM {} WHERE import_id = %s").format(_CHECKPOINT_COLUMNS, _C),
                (import_id,),
            ).fetchone()
        return None if row is None else Checkpoint(*row)

    def count(self, *, owner_id: str | None = None, import_id: str | None = None) -> int:
        conditions: list[sql.Composable] = []
        params: list[str] = []
        if owner_id is not None:
            conditions.append(sql.SQL("owner_id = %s"))
            params.append(owner_id)
        if import_id is not None:
            conditions.append(sql.SQL("import_id = %s"))
            params.append(import_id)
        where: sql.Composable = sql.SQL("")
        if conditions:
            where = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(conditions)
        with self._pool.connection() as conn:
            row = conn.execute(
                sql.SQL("SELECT count(*) FROM {}{}").format(_T, where), params
            ).fetchone()
        assert row is not None
        return int(row[0])

    def rows(self, owner_id: str) -> list[dict[str, Any]]:
        with self._pool.connection() as conn:
            found = conn.execute(
                sql.SQL(
                    "SELECT {} FROM {} WHERE owner_id = %s ORDER BY import_id, line, id"
                ).format(_COLUMNS_SQL, _T),
                (owner_id,),
            ).fetchall()
        result = []
        for values in found:
            row = dict(zip(COLUMN_NAMES, values, strict=True))
            row["time"] = row["time"].astimezone(UTC)
            result.append(row)
        return result

    def close(self) -> None:
        self._pool.close()

    # -- internals ----------------------------------------------------------------------------

    @contextmanager
    def _snapshot(
        self, query: EventQuery, params: dict[str, Any]
    ) -> Iterator[tuple[Connection, int]]:
        """A connection in a read-only, repeatable-read transaction (rolled back after), and
        the number of partitioned time ranges it added to ``params`` (0: no events there)."""
        with self._pool.connection() as conn, conn.transaction(force_rollback=True):
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            names = conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = %s::regclass",
                (EVENTS_TABLE,),
            )
            months = sorted(
                (int(m[1]), int(m[2]))
                for (name,) in names
                if (m := _PARTITION_NAME.fullmatch(name))
            )
            ranges = _partitioned_ranges(months, query.start, query.end)
            for i, (low, high) in enumerate(ranges):
                params[f"low{i}"], params[f"high{i}"] = low, high
            yield conn, len(ranges)

    def _export(
        self, query: EventQuery, params: dict[str, Any], schema: pa.Schema, batch_rows: int
    ) -> Iterator[pa.RecordBatch]:
        if not (query.package_ids or query.pixel_ids):
            return
        listed = ", ".join(
            f"{_UTC} AS time" if name == "time" else f'e."{name}"' for name in schema.names
        )
        with self._snapshot(query, params) as (conn, ranges):
            if not ranges:
                return
            # What the CSV says must not depend on the server's settings.
            conn.execute("SET LOCAL DateStyle = 'ISO'")
            conn.execute("SET LOCAL extra_float_digits = 1")  # doubles round-trip exactly
            statement = (
                f"COPY (SELECT {listed} {_selection(ranges)} ORDER BY e.time, e.id) "
                "TO STDOUT (FORMAT CSV)"
            )
            # libpq hands COPY data out a row at a time: a batch is batch_rows of them, parsed
            # here, in the consumer's thread. A stream closed early leaves this block, and
            # psycopg cancels the COPY.
            with conn.cursor().copy(statement, params) as copy:
                lines: list[Buffer] = []
                for line in copy:
                    lines.append(line)
                    if len(lines) == batch_rows:
                        yield from _csv_batches(lines, schema)
                        lines = []
                if lines:
                    yield from _csv_batches(lines, schema)

    def _aggregates(
        self, query: EventQuery, kinds: Sequence[tuple[Rollup, str]], params: dict[str, Any]
    ) -> Iterator[tuple[Rollup, AggregateRow]]:
        """Every aggregate of ``kinds`` counted in one snapshot: a request's breakdowns then
        count the same events, though imports commit while they are counted."""
        if not (query.package_ids or query.pixel_ids):
            return
        with self._snapshot(query, params) as (conn, ranges):
            if not ranges:
                return
            for rollup, breakdown in kinds:
                for row in _aggregate_rows(conn, ranges, rollup, breakdown, params):
                    yield rollup, row

    @staticmethod
    def _column_sql(name: str, type_: ColumnType, nullable: bool) -> sql.Composable:
        return sql.SQL("{} {}{}").format(
            sql.Identifier(name),
            sql.SQL(_SQL_TYPES[type_]),
            sql.SQL("" if nullable else " NOT NULL"),
        )

    def _ensure_partitions(self, months: set[tuple[int, int]]) -> None:
        """Create the monthly partitions of ``months`` that do not exist yet.

        Runs in its own short transaction: partitions outlive a failed batch (harmless, they
        are empty), and the batch's transaction does not hold their locks. A partition is made
        as a table of its own and then attached: ATTACH PARTITION takes only a SHARE UPDATE
        EXCLUSIVE lock on ``events`` (CREATE TABLE … PARTITION OF takes ACCESS EXCLUSIVE), so
        it neither waits for running exports and aggregates nor stops other writes. It does
        lock the default partition, which reads never touch (see ``_selection``).
        """
        with self._partitions_lock:
            missing = sorted(months - self._partitions)
        if not missing:
            return
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PARTITION_LOCK,))
            attached = {
                row[0]
                for row in conn.execute(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = %s::regclass",
                    (EVENTS_TABLE,),
                )
            }
            for year, month in missing:
                name = partition_name(year, month)
                if name in attached:  # made by another process meanwhile
                    continue
                start, end = _month_bounds(year, month)
                conn.execute(
                    sql.SQL("CREATE TABLE IF NOT EXISTS {} (LIKE {} INCLUDING ALL)").format(
                        sql.Identifier(name), _T
                    )
                )
                conn.execute(
                    sql.SQL(
                        "ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})"
                    ).format(_T, sql.Identifier(name), sql.Literal(start), sql.Literal(end))
                )
        with self._partitions_lock:
            self._partitions.update(missing)

    def _before_commit(self) -> None:
        """Runs inside ``write_batch``'s transaction after every write; tests make it fail."""


class _UuidArray:
    """A ``uuid[]`` parameter already in PostgreSQL's binary array format (see _UuidArrayDumper)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class _UuidArrayDumper(Dumper):
    """Sends a :class:`_UuidArray` as it is: a binary ``uuid[]``."""

    format = Format.BINARY
    oid = _UUID_ARRAY_OID

    def dump(self, obj: _UuidArray) -> Buffer:
        return obj.data


psycopg.adapters.register_dumper(_UuidArray, _UuidArrayDumper)


def _keyed(high: pa.Array, low: pa.Array) -> dict[str, _UuidArray]:
    """The parameters of the statements on ``event_ids`` for ids keyed by ``RecentIdKeys``:
    each key, the MD5 of the owner's id, a NUL and the id (as PostgreSQL's ``md5``), as a
    binary ``uuid[]``. Sent as hex texts and cast to uuid[] instead, PostgreSQL spent ~30 ms a
    batch of 50,000 receiving the array and parsing the texts, for each of the two statements."""
    # An id's key number is its digest read little-endian (events/keys.py): the digest is the
    # low word's bytes, then the high word's, which is the uuid's 16 bytes. An element of the
    # array is its length (16, as a big-endian int32), then those bytes.
    count = len(low)
    lows, highs = (memoryview(int64_values(a)[1]) for a in (low, high))  # the 64-bit words
    elements = bytearray(20 * count)
    elements[3::20] = bytes([16]) * count
    for byte in range(8):
        elements[4 + byte :: 20] = lows[byte::8]
        elements[12 + byte :: 20] = highs[byte::8]
    header = struct.pack(">iiiii", 1, 0, _UUID_OID, count, 1)  # one dimension from 1, no nulls
    return {"keys": _UuidArray(header + elements)}


def _copy_csv(table: pa.Table) -> bytes:
    """The rows as COPY's CSV, written by Arrow (C++): every text quoted, so an empty text is
    ``""`` while NULL is an empty field, COPY's defaults; times in ISO 8601 with a zone."""
    sink = io.BytesIO()
    pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
    return sink.getvalue()


def _aggregate_rows(
    conn: Connection,
    ranges: int,
    rollup: Rollup,
    breakdown: str,
    params: dict[str, Any],
) -> Iterator[AggregateRow]:
    """One aggregate's rows, read in the snapshot of ``conn``'s transaction."""
    if breakdown != "by-variable":
        statement = _aggregate_sql(rollup, breakdown, ranges)
    else:
        items = _items_sql(rollup, ranges)
        escaped = [row[0] for row in conn.execute(_ESCAPED_ITEMS.format(items=items), params)]
        pairs = [variable_pair(item) for item in escaped]
        params = params | {
            "items": escaped,
            "variables": [pair[0].encode() for pair in pairs],
            "values": [pair[1].encode() for pair in pairs],
        }
        statement = _BY_VARIABLE.format(items=items)
    with conn.cursor("eventport_aggregate", binary=True) as cursor:
        cursor.execute(statement, params)
        while rows := cursor.fetchmany(10_000):
            for row in rows:
                values = row[2:-2]
                if breakdown == "by-variable":
                    values = tuple(bytes(v).decode() for v in values)
                yield AggregateRow(row[0], row[1], breakdown, values, row[-2], row[-1])
