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
  ``id_uuid``, the ``id`` text null; reads give the text back (see ``_ID_UUID``).
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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from eventport.domain.errors import OutOfMemory, StoreBusy
from eventport.events.batch import AGENT_FIELDS, PLACE_FIELDS, ROW_PLACE_FIELDS, ROW_SCHEMA
from eventport.events.duckdb_csv import (
    FIELDS,
    LINE,
    SORT_ID,
    SORT_TIME,
    Pieces,
    chunks_of,
    fields_sql,
    sorted_lines,
    text_of,
)
from eventport.events.duckdb_pipeline import WindowPipeline
from eventport.events.duckdb_pool import PoolLimit, set_memory_limit, size_bytes
from eventport.events.id_filter import IdFilter
from eventport.events.id_filter import available as id_filter_available
from eventport.events.keys import (
    HALF_MASK,
    IS_UUID_SQL,
    KEY_FROM_HALVES_SQL,
    ORIGIN_KEY_SQL,
    RecentIdKeys,
    spelled_keys,
    uuid_numbers,
)
from eventport.events.schema import (
    COLUMN_NAMES,
    COLUMNS,
    DERIVED_ID_SQL,
    Batch,
    Checkpoint,
    Column,
    ColumnType,
    derived_ids,
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
    distinct_texts,
    micros_to_datetime,
    one_aggregate,
)
from eventport.export.csv import CsvColumn, CsvLayout
from eventport.export.periods import plan_counted_parts
from eventport.export.query import (
    BREAKDOWNS,
    ORGANIZATION_KINDS,
    AggregateRow,
    EventQuery,
    Rollup,
    check_aggregate,
    export_schema,
    variable_pair,
)
from eventport.positions import KnownKeys


def _q(name: str) -> str:
    return f'"{name}"'


_SQL_TYPES: dict[ColumnType, str] = {
    "text": "VARCHAR",
    "bigint": "BIGINT",
    "integer": "INTEGER",
    "double": "DOUBLE",
    "boolean": "BOOLEAN",
    "timestamp": "TIMESTAMPTZ",
}

# The events live in three tables: a row per event, and the distinct places and agents the rows
# name by key (events/batch.py). The view EVENTS_TABLE joins them back into the events table's
# columns (plus id_key), so every read (export, aggregates, rows) is written against it.
ROWS_TABLE = "event_rows"
PLACES_TABLE = "event_places"
AGENTS_TABLE = "event_agents"
# Columns that imports (nearly) never set live in one text of the row, ``extras``: a JSON
# object of their values' texts, null when all are null. Every column costs DuckDB's insert
# and commit about as much whatever it holds (~0.1-0.2 s a 5M-event import, null or not): the
# rows of a 5M enriched import inserted apart from the server, 4.21-4.28 s with the five in
# here against 4.49-4.69 s as columns (in the server the difference is within the machine's
# drift; docs/performance.md). The origin and endpoint texts are set only where an id does not
# spell its key (see _SPELLED); ``confidence`` and ``mtc_quota_exceeded`` are Scarf's export
# columns, which no import fills; the address is kept only with EVENTPORT_KEEP_IP_ADDRESSES.
_EXTRAS = ("origin_id", "endpoint_id", "confidence", "mtc_quota_exceeded", "remote_address")
_ROW_COLUMNS = [c for c in COLUMNS if c.name in ROW_SCHEMA.names and c.name not in _EXTRAS]
_ROW_NAMES_SQL = ", ".join(
    [*(_q(c.name) for c in _ROW_COLUMNS), "place_key", "agent_key", "extras"]
)


def _extras_sql(names: Sequence[str], table: str = "") -> str:
    """The ``extras`` text of the columns ``names`` of ``table`` (a prefix such as "o.")."""
    if not names:
        return "CAST(NULL AS VARCHAR)"
    missing = " AND ".join(f"{table}{_q(n)} IS NULL" for n in names)
    pairs = ", ".join(f"'{n}', CAST({table}{_q(n)} AS VARCHAR)" for n in names)
    return f"CASE WHEN {missing} THEN NULL ELSE CAST(json_object({pairs}) AS VARCHAR) END"


# The values of a batch's rows (the batch view's columns) in _ROW_NAMES_SQL's order: with the
# batch's ``extras`` where _with_keys found them all null (nearly every batch: the five columns
# are then not read at all), else made from the five columns. Made from them in every batch, the
# five columns read and tested for each row cost what leaving them out saved.
_ROW_VALUES_SQL = {
    folded: ", ".join(
        [
            *(_q(c.name) for c in _ROW_COLUMNS),
            "place_key",
            "agent_key",
            "extras" if folded else _extras_sql(_EXTRAS),
        ]
    )
    for folded in (True, False)
}
_DIMENSION_TABLES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (PLACES_TABLE, "place_key", PLACE_FIELDS),
    (AGENTS_TABLE, "agent_key", AGENT_FIELDS),
)
# The events columns a dimension table gives (by its alias; the rest, ROW_PLACE_FIELDS among
# them, are the row table's), and how each table is joined to the rows (aliased r).
_JOINED = {n: "p" for n in PLACE_FIELDS if n not in ROW_PLACE_FIELDS} | dict.fromkeys(
    AGENT_FIELDS, "a"
)
_JOINS = {
    "p": f"LEFT JOIN {PLACES_TABLE} p ON p.place_key = r.place_key",
    "a": f"LEFT JOIN {AGENTS_TABLE} a ON a.agent_key = r.agent_key",
}
_BATCH_PLACES = "eventport_batch_places"
_BATCH_AGENTS = "eventport_batch_agents"
# The name each dimension table's rows in a batch are registered under.
_BATCH_DIMENSIONS = {PLACES_TABLE: _BATCH_PLACES, AGENTS_TABLE: _BATCH_AGENTS}
_BATCH_VIEW = "eventport_batch"
_BATCH_MAYBE = "eventport_batch_maybe"  # the batch's ids the id filter may hold
_IDS_VIEW = "eventport_ids"
_PACKAGES_VIEW = "eventport_packages"
_PIXELS_VIEW = "eventport_pixels"
_ITEMS_VIEW = "eventport_items"


# Columns stored with a compression named in the table (DuckDB then skips trying the others on
# every row group it writes; files made before keep their columns' compression):
# - Texts that are (nearly) all distinct, event ids: uncompressed. DuckDB's dictionary and FSST
#   compression of them costs a write ~0.35 us an event (of ~2.8 us, on 122,880-event batches)
#   and saves ~35 bytes an event (~30% of the file); stored as they are, the write is ~25%
#   faster. (Origin and endpoint ids were stored so too while they had columns of their own:
#   now their keys, see _SPELLED.)
# - The 128-bit keys (id, origin, endpoint: hashes, or numbers spelled by random ids):
#   uncompressed, what DuckDB chooses for them after trying bit packing and RLE on each.
# - The time and the line: bit packing (frame of reference or deltas), what it chooses for them.
# The rows of a real 1M enriched import written again apart from the server as the writer does
# (a transaction per 61,440 rows, one thread), five rounds: 1.11 s against 1.25 s (medians; the
# keys alone 1.15, time and line alone 1.17); the file as large. In the server (perf, 5M
# enriched) the analyses skipped were ~2.3% of the writer's samples: end to end within the
# machine's drift. Naming the texts' dict_fsst (what DuckDB chooses for them) or the place and
# agent keys' uncompressed saved nothing. A segment of one value is still stored as a constant.
# (id_uuid, below, is uncompressed for the first reason: its numbers are as distinct.)
_COMPRESSION = {
    "id": "uncompressed",
    "id_uuid": "uncompressed",
    "id_key": "uncompressed",
    "origin_key": "uncompressed",
    "endpoint_key": "uncompressed",
    "time": "bitpacking",
    "line": "bitpacking",
}


def _defined(name: str, sql_type: str) -> str:
    """A row table column's name and type, with its compression where one is named."""
    named = _COMPRESSION.get(name)
    return f"{_q(name)} {sql_type}" + (f" USING COMPRESSION {named}" if named else "")


def _column_sql(name: str, type_: ColumnType, nullable: bool) -> str:
    return _defined(name, _SQL_TYPES[type_]) + ("" if nullable else " NOT NULL")


# An event id that is a canonical UUID (36 characters, lowercase hex in groups of 8-4-4-4-12:
# what most $unique_ids are) is kept only as the number it spells, in ``id_uuid`` (DuckDB's
# UUID, 16 bytes), with a null ``id``; DuckDB gives exactly that text back. Measured on 2M ids
# written apart, as the writer does: 0.68-0.79 s and 41 MB against 0.81-0.93 s and 81 MB.
# The id an import derives for a line without $unique_id (schema.derived_ids: ~43 bytes) is
# not kept at all: both null, reads make it again from the row's import id and line. Any
# other id (an upper-case UUID, say) stays text.
_ID_UUID_SQL = _defined("id_uuid", "UUID")
_ID_UUID = f"CAST({KEY_FROM_HALVES_SQL.format(prefix='id_uuid')} AS UUID)"


def _row_column_sql(column: Column) -> str:
    """A row table column's definition: the id may be null there (when ``id_uuid`` holds it)."""
    nullable = column.nullable or column.name == "id"
    return _column_sql(column.name, column.type, nullable)


_COLUMNS_SQL = ", ".join(_q(n) for n in COLUMN_NAMES)
_COLUMN_OF = {c.name: c for c in COLUMNS}
# origin_key: the origin id as a 128-bit number, what aggregates count distinct values of
# (2.3x faster than counting 32-character texts, measured on 10M events); see events/keys.py.
# A batch brings both keys as UBIGINT halves (computed before the lock); rows stored before
# get theirs from the SQL definitions.
_ID_KEY = KEY_FROM_HALVES_SQL.format(prefix="id")
# Origin and endpoint ids are (nearly always) 32 hex digits: a row keeps such an id only as the
# number it spells (origin_key, endpoint_key: 16 bytes, not 32 uncompressed), with no text;
# any other text stays as it is, in the row's extras. Reads give the text back from the number.
# Measured on 5M enriched events: the file 633 MB instead of 868. By column, its key's prefix.
_SPELLED = {"origin_id": "origin", "endpoint_id": "endpoint"}
_SPELLED_KEYS = ", ".join(f"{prefix}_key" for prefix in _SPELLED.values())
_SPELLED_KEYS_SQL = ", ".join(KEY_FROM_HALVES_SQL.format(prefix=p) for p in _SPELLED.values())


def _row_value(name: str, table: str) -> str:
    """A row column's value, read from the row table aliased ``table``."""
    if name == "id":
        derived = DERIVED_ID_SQL.format(import_id=f"{table}.import_id", line=f"{table}.line")
        return f"coalesce({table}.id, CAST({table}.id_uuid AS VARCHAR), {derived})"
    if name in _EXTRAS:
        text = f"json_extract_string({table}.extras, '$.{name}')"
        kind = _COLUMN_OF[name].type
        value = text if kind == "text" else f"CAST({text} AS {_SQL_TYPES[kind]})"
        if name in _SPELLED:
            key = f"{table}.{_SPELLED[name]}_key"
            return f"coalesce({value}, lpad(lower(hex({key})), 32, '0'))"
        return value
    return f"{table}.{_q(name)}"


def _view_sql() -> str:
    """The events table's columns, in order, from the row and dimension tables."""
    listed = ", ".join(
        f"{_JOINED[name]}.{_q(name)}"
        if name in _JOINED
        else f"{_row_value(name, 'r')} AS {_q(name)}"
        for name in COLUMN_NAMES
    )
    return (
        f"CREATE OR REPLACE VIEW {EVENTS_TABLE} AS SELECT r.id_key, {listed} "
        f"FROM {ROWS_TABLE} r " + " ".join(_JOINS.values())
    )


# Times leave DuckDB as epoch microseconds: fetching TIMESTAMPTZ as Python objects needs pytz.
_SELECT_COLUMNS = ", ".join(
    f"epoch_us({_q(c.name)})" if c.type == "timestamp" else _q(c.name) for c in COLUMNS
)
_CHECKPOINT_COLUMNS = ", ".join(_q(f) for f in CHECKPOINT_FIELDS)
# A checkpoint is written by UPDATE, and by INSERT only when no row was there (the import's
# first batch): under the write lock nothing else writes one between the two. An upsert
# (INSERT ... ON CONFLICT DO UPDATE) took ~4.2 ms a batch against ~1.1 ms (measured apart,
# in batches of 61,440 events; ~8.5 ms in the server, the other vCPU busy).
_UPDATE_CHECKPOINT = (
    f"UPDATE {CHECKPOINTS_TABLE} SET "
    + ", ".join(f"{_q(f)} = ?" for f in CHECKPOINT_FIELDS[1:])
    + f", updated_at = now() WHERE {_q(CHECKPOINT_FIELDS[0])} = ?"
)
_INSERT_CHECKPOINT = (
    f"INSERT INTO {CHECKPOINTS_TABLE} ({_CHECKPOINT_COLUMNS}, updated_at) "
    f"VALUES ({', '.join('?' for _ in CHECKPOINT_FIELDS)}, now())"
)


def _save_checkpoint(con: duckdb.DuckDBPyConnection, values: list[object]) -> None:
    """Write an import's checkpoint (``values`` in CHECKPOINT_FIELDS order), in the caller's
    transaction."""
    ((updated,),) = _run(con, _UPDATE_CHECKPOINT, [*values[1:], values[0]])
    if not updated:
        _run(con, _INSERT_CHECKPOINT, values)


# -- export and aggregates -------------------------------------------------------------------------


def _events_from(needed: Iterable[str] = ()) -> str:
    """The events, aliased ``e``, with only the dimension tables whose columns are ``needed``
    joined in (the view EVENTS_TABLE joins both, and DuckDB does not drop an unused LEFT JOIN):
    a daily count reads the row table alone, a by-country count joins only the places."""
    wanted = set(needed)
    joined = [name for name in _JOINED if name in wanted]
    derived = [name for name in _EXTRAS if name in wanted]
    if not joined and not derived and "id" not in wanted:
        return f"{ROWS_TABLE} e "
    listed = ", ".join(
        [
            f"r.* REPLACE ({_row_value('id', 'r')} AS id)" if "id" in wanted else "r.*",
            *(f"{_row_value(n, 'r')} AS {_q(n)}" for n in derived),
            *(f"{_JOINED[n]}.{_q(n)}" for n in joined),
        ]
    )
    aliases = {_JOINED[n] for n in joined}
    joins = "".join(f" {join}" for alias, join in _JOINS.items() if alias in aliases)
    return f"(SELECT {listed} FROM {ROWS_TABLE} r{joins}) e "


def _selected_from(needed: Iterable[str] = ()) -> str:
    return (
        f"FROM {_events_from(needed)}"
        f"LEFT JOIN {_PACKAGES_VIEW} p ON e.package_id = p.id "
        f"LEFT JOIN {_PIXELS_VIEW} x ON e.pixel_id = x.id "
    )


_SELECTED_WHERE = (
    "WHERE e.owner_id = $owner "
    "AND e.time >= CAST($start AS TIMESTAMPTZ) AND e.time < CAST($end AS TIMESTAMPTZ) "
    "AND (p.id IS NOT NULL OR x.id IS NOT NULL)"
)
# The query's events: one owner, start <= time < end, and of the selected packages or pixels.
# ``artifact`` is the package when selected, else the pixel's artifact (see EventQuery).
_SELECTION = _selected_from() + _SELECTED_WHERE  # columns of the row table only
_ARTIFACT = "coalesce(p.id, x.artifact)"
_ARTIFACT_NUMBER = "coalesce(p.n, x.n)"  # its place in _artifacts(query): the same order
_COUNTED = "NOT coalesce(e.dnt, false) AND NOT coalesce(e.excluded, false)"
_DO_NOT_TRACK = "coalesce(e.dnt, false)"
# A naive TIMESTAMP of the UTC wall clock: periods then do not depend on the session time zone.
_UTC = "make_timestamp(epoch_us(e.time))"
_PERIODS: dict[str, str] = {
    "daily": f"CAST({_UTC} AS DATE)",
    "weekly": f"CAST(date_trunc('week', {_UTC}) AS DATE)",  # ISO weeks: Monday
    "monthly": f"CAST(date_trunc('month', {_UTC}) AS DATE)",
    "yearly": f"CAST(date_trunc('year', {_UTC}) AS DATE)",
}
_COUNTS = ("total", "total_unique")  # an aggregate's two counts, after its group keys
_SHARDS_VIEW = "aggregate_shards"  # the rows of a part's shards, added up
# The events of one shard of an aggregate's part (see _added_up); hash(NULL) is a number
# too, so events without an origin fall in one shard and are counted once. A part counted
# whole has ``true`` in its place (no origin hashed).
_IN_SHARD = "hash({alias}.origin_key) % CAST($shards AS UBIGINT) = CAST($shard AS UBIGINT)"


def _in_shard(alias: str, sharded: bool) -> str:
    return _IN_SHARD.format(alias=alias) if sharded else "true"


# by-variable: the items of ``variables``; items holding an escape are decoded in Python
# (``variable_pair``: DuckDB's url_decode fails on invalid UTF-8 and keeps '+'), the others
# are split here, the same way (on the first '=').
_ITEMS = (
    "SELECT {period} AS d, {artifact} AS artifact, e.id_key, e.origin_key, "
    "unnest(string_split(e.variables, '&')) AS item "
    f"{_SELECTION} AND {_COUNTED} AND e.variables <> ''"
)
_ESCAPED_ITEMS = (
    "SELECT DISTINCT item FROM ({items}) WHERE contains(item, '%') OR contains(item, '+')"
)
_SPLIT_VARIABLE = (
    "CASE WHEN strpos(i.item, '=') > 0 THEN left(i.item, strpos(i.item, '=') - 1) ELSE i.item END"
)
_SPLIT_VALUE = (
    "CASE WHEN strpos(i.item, '=') > 0 THEN substr(i.item, strpos(i.item, '=') + 1) ELSE '' END"
)
_BY_VARIABLE = (
    "SELECT d, artifact, variable, value, count(DISTINCT id_key) AS total, "
    "count(DISTINCT origin_key) AS total_unique "
    "FROM (SELECT i.d, i.artifact, i.id_key, i.origin_key, "
    f"coalesce(m.variable, {_SPLIT_VARIABLE}) AS variable, "
    f"coalesce(m.value, {_SPLIT_VALUE}) AS value "
    f"FROM ({{items}}) i LEFT JOIN {_ITEMS_VIEW} m ON m.item = i.item "
    # the shard's condition here, not among the items': there it ran out of 128 MB on a
    # month of 830,000 events, here it counts them in 1.1 s
    "WHERE i.item <> '' AND {in_shard}) "
    "GROUP BY d, artifact, variable, value ORDER BY d, artifact, variable, value"
)


# Exports: events per hour (UTC) plan the windows; a window is a time range within the query's.
_SORT_KEYS = ("time", "id")
_EXPORT_PLAN = (
    f"SELECT epoch_us(date_trunc('hour', {_UTC})) AS hour, count(*) {_SELECTION} "
    "GROUP BY hour ORDER BY hour"
)
_IN_WINDOW = "AND e.time >= CAST($low AS TIMESTAMPTZ) AND e.time < CAST($high AS TIMESTAMPTZ)"

# A count of a window's events taking longer than this per event means they are scattered (see
# DuckDBEventStore._scattered): here 30-50 ns an event in time order, 400 ns in random order
# (10M events, windows of 131,072).
_WINDOW_COUNT = f"SELECT count(*) {_SELECTION} {_IN_WINDOW}"
_SCATTERED_SECONDS_PER_ROW = 150e-9

# CSV exports: each window's rows are the sort keys and the line DuckDB wrote (duckdb_csv).
_NAMES_VIEW = "eventport_package_names"
_LOGICAL_TYPES: dict[str, ColumnType] = {c.name: c.type for c in COLUMNS}


def _csv_field(column: CsvColumn, table: str = "e") -> Pieces:
    """A CSV column's field, of its value cast to its logical type (a no-op while the stored
    column has it): the package's name for a v1 package column, else the column of the
    events (or of the dimension table) aliased ``table``."""
    if column.package_name:  # the event's package, else its pixel's (package_names)
        return FIELDS["text"](f"CAST(coalesce(n.name, pn.name) AS {_SQL_TYPES['text']})")
    kind = _LOGICAL_TYPES[column.source]
    return FIELDS[kind](f"CAST({_row_value(column.source, table)} AS {_SQL_TYPES[kind]})")


_PLACE_TEXTS = "eventport_place_texts"
_AGENT_TEXTS = "eventport_agent_texts"
_DIMENSION_OF = dict.fromkeys(PLACE_FIELDS, "place") | dict.fromkeys(AGENT_FIELDS, "agent")


class _DimensionTexts:
    """A CSV layout's line with each place's and agent's fields written once per export.

    The fields a place (or an agent) gives are written as CSV text once for each place, in
    runs of adjacent columns (one text holds ``lat,lon,country,...``), and each event's line
    takes its place's runs by key: one join and a few pieces per line instead of sixteen
    fields formatted per event (measured on 10M events: the dimension fields cost more than
    half of a line).
    """

    def __init__(self, layout: CsvLayout) -> None:
        runs: list[tuple[str, list[CsvColumn]]] = []  # ("row" | "place" | "agent", columns)
        for column in layout.columns:
            # A place's fields are all written from its texts, the row's country included.
            kind = "row" if column.package_name else _DIMENSION_OF.get(column.source, "row")
            if runs and runs[-1][0] == kind != "row":
                runs[-1][1].append(column)
            else:
                runs.append((kind, [column]))
        self._runs = {"place": [], "agent": []}  # type: dict[str, list[list[CsvColumn]]]
        fields: list[Pieces] = []
        for kind, columns in runs:
            if kind == "row":
                fields.append(_csv_field(columns[0]))
                continue
            alias = "fp" if kind == "place" else "fa"
            number = len(self._runs[kind])
            self._runs[kind].append(columns)
            fields.append((f"coalesce({alias}.t{number}, {_literal(',' * (len(columns) - 1))})",))
        self.line = fields_sql(fields, line=True)
        self.joins = ""
        if self._runs["place"]:
            self.joins += f"LEFT JOIN {_PLACE_TEXTS} fp ON fp.place_key = e.place_key "
        if self._runs["agent"]:
            self.joins += f"LEFT JOIN {_AGENT_TEXTS} fa ON fa.agent_key = e.agent_key "

    def tables(
        self, cursor: duckdb.DuckDBPyConnection, params: dict[str, object]
    ) -> dict[str, pa.Table]:
        """The runs' texts of the places and agents that the export's events (its selection
        ``params``) name, read on ``cursor``: not of every one stored, which cost each export
        time and memory in proportion to the store (84,000 places: 0.12 s and 9 MB, a third of
        a 1-day export)."""
        made = {}
        for kind, name, table, key in (
            ("place", _PLACE_TEXTS, PLACES_TABLE, "place_key"),
            ("agent", _AGENT_TEXTS, AGENTS_TABLE, "agent_key"),
        ):
            if not self._runs[kind]:
                continue
            listed = ", ".join(
                f"{fields_sql(_csv_field(c, 'd') for c in columns)} AS t{n}"
                for n, columns in enumerate(self._runs[kind])
            )
            named = f"SELECT e.{key} {_SELECTION}"
            made[name] = cursor.sql(
                f"SELECT {key}, {listed} FROM {table} d WHERE {key} IN ({named})", params=params
            ).to_arrow_table()
        return made


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _names_table(package_names: Mapping[str, str]) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(list(package_names), pa.string()),
            "name": pa.array(list(package_names.values()), pa.string()),
        }
    )


def _windows(
    hours: list[tuple[int, int]], window_rows: int
) -> Iterator[tuple[int, int | None, int]]:
    """Consecutive hours ``(start in µs, events)`` gathered into windows of at most
    ``window_rows`` events (an hour with more is a window of its own): ``(low, high, events)``,
    ``high`` exclusive, None for the last window (it ends where the query does)."""
    low, rows = hours[0][0], 0
    for start, count in hours:
        if rows and rows + count > window_rows:
            yield low, start, rows
            low, rows = start, 0
        rows += count
    yield low, None, rows


def _values_sql(breakdown: str) -> list[str]:
    """The breakdown's value expressions over the events (aliased ``e``)."""
    kind = ORGANIZATION_KINDS.get(breakdown)
    if kind is None:
        return [f"e.{_q(name)}" for name in BREAKDOWNS[breakdown]]
    return [
        f"CASE WHEN e.origin_connection_type = '{kind}' THEN e.{_q(name)} END"
        for name in BREAKDOWNS[breakdown]
    ]


def _aggregate_sql(rollup: Rollup, breakdown: str, sharded: bool) -> str:
    period = _PERIODS[rollup]
    values = _values_sql(breakdown)
    counted = _DO_NOT_TRACK if breakdown == "by-total-do-not-track" else _COUNTED
    names = [f"v{i}" for i in range(len(values))]
    select = "".join(f", {expr} AS {name}" for expr, name in zip(values, names, strict=True))
    keys = ", ".join(["d", "artifact", *names])
    order = ", ".join(["d", "artifact", *(f"{name} NULLS LAST" for name in names)])
    needed = [*BREAKDOWNS[breakdown]]
    in_shard = _in_shard("e", sharded)
    if breakdown in ORGANIZATION_KINDS:
        needed.append("origin_connection_type")
    return (
        f"SELECT {keys}, count(*) AS {_COUNTS[0]}, count(DISTINCT origin_key) AS {_COUNTS[1]} "
        f"FROM (SELECT {period} AS d, {_ARTIFACT_NUMBER} AS artifact, e.origin_key{select} "
        f"{_selected_from(needed)}{_SELECTED_WHERE} AND {counted} AND {in_shard}) "
        f"GROUP BY {keys} ORDER BY {order}"
    )


def _utc_text(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError(f"query times must be aware (UTC), not {moment!r}")
    return moment.astimezone(UTC).isoformat()


def _artifacts(query: EventQuery) -> list[str]:
    """The query's artifacts, sorted (by code point: the byte order of their UTF-8, DuckDB's
    order): an artifact's number (``n`` in the selection tables) is its place here, so that
    aggregates group and order by a small integer instead of a 36-character id."""
    pixels = (query.pixel_artifacts.get(pixel, pixel) for pixel in query.pixel_ids)
    return sorted({*query.package_ids, *pixels})


def _selection_tables(query: EventQuery) -> dict[str, pa.Table]:
    packages = sorted(set(query.package_ids))
    pixels = sorted(set(query.pixel_ids))
    artifacts = [query.pixel_artifacts.get(pixel, pixel) for pixel in pixels]
    number = {artifact: n for n, artifact in enumerate(_artifacts(query))}
    return {
        _PACKAGES_VIEW: pa.table(
            {
                "id": pa.array(packages, pa.string()),
                "n": pa.array([number[package] for package in packages], pa.int32()),
            }
        ),
        _PIXELS_VIEW: pa.table(
            {
                "id": pa.array(pixels, pa.string()),
                "artifact": pa.array(artifacts, pa.string()),
                "n": pa.array([number[artifact] for artifact in artifacts], pa.int32()),
            }
        ),
    }


def _selection_params(query: EventQuery) -> dict[str, object]:
    return {"owner": query.owner_id, "start": _utc_text(query.start), "end": _utc_text(query.end)}


def _run(
    con: duckdb.DuckDBPyConnection,
    query: str,
    params: Sequence[object] | Mapping[str, object] | None = None,
) -> list[tuple[Any, ...]]:
    """Execute and fetch everything: DuckDB refuses other work on a connection (registering a
    table, say) while a result is still unread, so no statement leaves one behind."""
    return con.execute(query, params).fetchall()


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


def _with_keys(owner_id: str, rows: pa.Table, id_keys: RecentIdKeys) -> pa.Table:
    """The batch's rows with the halves of their id, origin and endpoint keys (events/keys.py),
    and without the origin and endpoint texts the keys spell (see _SPELLED). Where the columns
    that live in ``extras`` are all null, they are left out for an ``extras`` column of nulls
    (see _ROW_VALUES_SQL)."""
    ids = rows.column("id")
    id_high, id_low = id_keys(owner_id, ids, last_use=True)
    uuid_high, uuid_low, spelled = uuid_numbers(ids)
    halves = [
        ("id_hi", id_high),
        ("id_lo", id_low),
        ("id_uuid_hi", uuid_high),
        ("id_uuid_lo", uuid_low),
    ]
    rows = rows.set_column(rows.schema.get_field_index("id"), "id", _id_texts(rows, spelled))
    for name, prefix in _SPELLED.items():
        texts = rows.column(name)
        high, low, spelled = spelled_keys(texts)
        halves += [(f"{prefix}_hi", high), (f"{prefix}_lo", low)]
        if (pc.sum(spelled).as_py() or 0) == len(texts) - texts.null_count:
            kept = pa.nulls(len(texts), pa.string())  # every text is its key (enrichment's)
        else:
            kept = pc.if_else(spelled, pa.scalar(None, pa.string()), texts.cast(pa.string()))
        rows = rows.set_column(rows.schema.get_field_index(name), name, kept)
    for name, column in halves:
        rows = rows.append_column(name, column)
    if all(rows.column(name).null_count == rows.num_rows for name in _EXTRAS):
        rows = rows.drop_columns(list(_EXTRAS))
        rows = rows.append_column("extras", pa.nulls(rows.num_rows, pa.string()))
    return rows


def _id_texts(rows: pa.Table, spelled: pa.Array) -> pa.Array | pa.ChunkedArray:
    """The id texts the rows keep (see _ID_UUID): none where the id is a UUID (``spelled``)
    or the id derived for its import and line. Nearly every batch is all one or the other."""
    nothing = pa.nulls(rows.num_rows, pa.string())
    if spelled.true_count == rows.num_rows:
        return nothing
    ids = rows.column("id").cast(pa.string())
    imports = rows.column("import_id")
    distinct = distinct_texts(imports)
    # One import's batch: its prefix once, not joined on every row.
    derived = derived_ids(distinct[0] if len(distinct) == 1 else imports, rows.column("line"))
    dropped = pc.or_(spelled, pc.equal(ids, derived))
    if pc.all(dropped).as_py():
        return nothing
    return pc.if_else(dropped, pa.scalar(None, pa.string()), ids)


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


def _sorted_window(
    cursor: duckdb.DuckDBPyConnection, statement: str, window: dict[str, object]
) -> pa.Array:
    """One window's CSV lines, in order."""
    return sorted_lines(cursor.sql(statement, params=window).to_arrow_table())


def _sorted_by_duckdb(
    cursor: duckdb.DuckDBPyConnection, statement: str, window: dict[str, object], rows: int
) -> Iterator[bytes]:
    reader = cursor.sql(statement, params=window).to_arrow_reader(rows)
    try:
        for batch in reader:
            yield text_of(batch.column(LINE))
    finally:
        reader.close()


T = TypeVar("T")


# Memory an aggregate part may count with, per event: with a 64 MB buffer pool, two parts of
# ~2.5M events each (a daily aggregate by country, client and platform) were counted side by
# side, two of ~5M were not (~13 bytes an event); this leaves room for wider groups.
_AGGREGATE_BYTES_PER_EVENT = 32


def aggregate_events_within(memory_limit: str, parts: int) -> int:
    """The events each of ``parts`` aggregate parts counted at once may hold within a DuckDB
    memory limit such as ``128MB`` (at least 100,000)."""
    size = size_bytes(memory_limit)
    return max(100_000, size // (parts * _AGGREGATE_BYTES_PER_EVENT))


def _within_memory(items: Iterator[T], limit: str) -> Iterator[T]:
    """``items``, with DuckDB running out of its memory limit told as what it is (a 503 with
    what to do), not as an internal error."""
    try:
        yield from items
    except duckdb.OutOfMemoryException as exc:
        raise OutOfMemory(
            f"the event store needs more memory for this request than it may use ({limit}, "
            "EVENTPORT_DUCKDB_MEMORY_MB): ask for a shorter time range, or raise the limit"
        ) from exc


def _counted_shard(
    cursor: duckdb.DuckDBPyConnection, statement: str, params: dict[str, object]
) -> pa.Table:
    """One shard of a part of an aggregate (see ``_aggregate_sql``): its rows, in order."""
    return cursor.sql(statement, params=params).to_arrow_table()


def _added_up(shards: list[pa.Table]) -> pa.Table:
    """The rows of a part counted in shards: each group's counts added up (a distinct origin
    is in one shard only), in the order of ``_aggregate_sql``. Added by an in-memory DuckDB
    of its own (the store's cursors go on counting), for DuckDB's own order."""
    whole = pa.concat_tables(shards)
    keys = [name for name in whole.column_names if name not in _COUNTS]
    sums = ", ".join(f"CAST(sum({name}) AS BIGINT) AS {name}" for name in _COUNTS)
    order = ", ".join(f"{name} NULLS LAST" for name in keys)
    with duckdb.connect() as con:
        con.register(_SHARDS_VIEW, whole)
        summed = con.sql(
            f"SELECT {', '.join(keys)}, {sums} FROM {_SHARDS_VIEW} "
            f"GROUP BY {', '.join(keys)} ORDER BY {order}"
        ).to_arrow_table()
    return summed.cast(whole.schema)


#: Rows in a row group of the file, and in an import's batch (each batch is one row group). Half
#: DuckDB's default of 122,880: a batch being written is held twice, as Arrow columns and as
#: DuckDB's rows before it compresses them, and half the rows hold half of both. Measured on 5M
#: enriched events over HTTP: the server's peak ~60 MB lower, at the same speed (see
#: docs/performance.md). A setting of the attached file, not kept in it: row groups written
#: before keep their size.
ROW_GROUP_ROWS = 61_440
#: Rows in a row group of a file ``eventport compact`` writes: DuckDB's default. Reads of such a
#: file are ~8% faster (31-day CSV export and daily aggregate of 10M events, against row groups
#: of ROW_GROUP_ROWS), and compaction holds no import's batches.
COMPACTED_ROW_GROUP_ROWS = 122_880
_FILE = "eventport_events"  # the events file, as attached to the store's connection
_Config = dict[str, str | bool | int | float | list[str]]  # a DuckDB database's settings


def _kept_blocks(memory_limit: str, write_memory_limit: str | None) -> str:
    """How much of its freed blocks DuckDB keeps for reuse: twice the write limit, at most
    the full limit (see DuckDBEventStore.__init__)."""
    full = size_bytes(memory_limit)
    if write_memory_limit is None:
        return f"{full}B"
    return f"{min(full, 2 * size_bytes(write_memory_limit))}B"


def _attach(con: duckdb.DuckDBPyConnection, path: Path, alias: str, options: str) -> None:
    """ATTACH the DuckDB file at ``path`` to ``con`` as ``alias``, with ``options``."""
    _run(con, f"ATTACH '{_sql_text(str(path))}' AS {alias} ({options})")


def _open_file(path: Path, config: _Config, row_group_rows: int) -> duckdb.DuckDBPyConnection:
    """A connection whose default database is the file at ``path`` (created if missing), with
    new rows grouped by ``row_group_rows``: attached to an in-memory database, since only
    ATTACH takes a row group size. DuckDB spills to ``<file>.tmp``, as for a file it opens."""
    con = duckdb.connect(config={**config, "temp_directory": f"{path}.tmp"})
    try:
        _attach(con, path, _FILE, f"ROW_GROUP_SIZE {row_group_rows}")
        _run(con, f"USE {_FILE}")
    except BaseException:
        con.close()
        raise
    return con


def _cursor(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """A cursor of ``con`` (a connection of its own to the same database) reading the file:
    a new cursor's default database is the in-memory one."""
    cursor = con.cursor()
    _run(cursor, f"USE {_FILE}")
    return cursor


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
        config: _Config = {
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
        self._scattered_seconds = _SCATTERED_SECONDS_PER_ROW

    # -- the interface -------------------------------------------------------------------------

    def setup(self) -> None:
        with self._lock:
            con = self._connection()
            _run(con, "BEGIN TRANSACTION")
            try:
                self._create_tables(con)
                _run(con, "COMMIT")
            except BaseException:
                with contextlib.suppress(duckdb.Error):
                    _run(con, "ROLLBACK")
                raise

    def _create_tables(self, con: duckdb.DuckDBPyConnection) -> None:
        wide = _run(
            con,
            "SELECT table_type FROM information_schema.tables WHERE table_catalog = "
            "current_database() AND table_schema = current_schema() AND table_name = ?",
            [EVENTS_TABLE],
        )
        old = bool(wide) and wide[0][0] == "BASE TABLE"  # a file from before the row tables
        if old:
            _run(con, f"ALTER TABLE {EVENTS_TABLE} RENAME TO {_OLD_EVENTS}")
        rows = ", ".join(_row_column_sql(c) for c in _ROW_COLUMNS)
        _run(
            con,
            f"CREATE TABLE IF NOT EXISTS {ROWS_TABLE} ({_defined('id_key', 'UHUGEINT')} "
            f"NOT NULL, {rows}, place_key BIGINT, agent_key BIGINT, "
            f"{_defined('origin_key', 'UHUGEINT')}, {_defined('endpoint_key', 'UHUGEINT')}, "
            f"extras VARCHAR, {_ID_UUID_SQL})",
        )
        for table, key, fields in _DIMENSION_TABLES:
            listed = ", ".join(_column_sql(n, _COLUMN_OF[n].type, True) for n in fields)
            _run(
                con,
                f"CREATE TABLE IF NOT EXISTS {table} ({key} BIGINT PRIMARY KEY, {listed})",
            )
        for table, wanted in (
            (ROWS_TABLE, _ROW_COLUMNS),
            *((table, [_COLUMN_OF[n] for n in fields]) for table, _, fields in _DIMENSION_TABLES),
        ):
            have = _columns_of(con, table)
            for column in wanted:  # columns added to the schema since the file was created
                if column.name not in have:
                    if not column.nullable:
                        raise EventStoreError(f"cannot add required column {column.name!r}")
                    _run(
                        con,
                        f"ALTER TABLE {table} ADD COLUMN "
                        f"{_column_sql(column.name, column.type, True)}",
                    )
        if "endpoint_key" not in _columns_of(con, ROWS_TABLE):  # a file from before it
            _run(con, f"ALTER TABLE {ROWS_TABLE} ADD COLUMN {_defined('endpoint_key', 'UHUGEINT')}")
        _fold_extras(con)
        if "id_uuid" not in _columns_of(con, ROWS_TABLE):  # a file from before it
            _run(con, f"DROP VIEW IF EXISTS {EVENTS_TABLE}")  # made again below
            _run(con, f"ALTER TABLE {ROWS_TABLE} ALTER COLUMN id DROP NOT NULL")
            _run(con, f"ALTER TABLE {ROWS_TABLE} ADD COLUMN {_ID_UUID_SQL}")
        if old:
            _migrate_wide_events(con)
        _run(con, _view_sql())
        _run(
            con,
            f"CREATE TABLE IF NOT EXISTS {CHECKPOINTS_TABLE} ("
            "import_id VARCHAR PRIMARY KEY, "
            + ", ".join(f"{_q(f)} BIGINT NOT NULL" for f in CHECKPOINT_FIELDS[1:])
            + ", updated_at TIMESTAMPTZ NOT NULL)",
        )
        have = _columns_of(con, CHECKPOINTS_TABLE)
        for name in CHECKPOINT_FIELDS[1:]:  # counters added since the file was created
            if name not in have:
                _run(
                    con,
                    f"ALTER TABLE {CHECKPOINTS_TABLE} ADD COLUMN {_q(name)} BIGINT "
                    "NOT NULL DEFAULT 0",
                )

    def stored_ids(self, owner_id: str, ids: pa.Array) -> pa.Array:
        """On a cursor of its own: the lookup reads the last committed snapshot and does not
        wait for a batch being written (the worker looks up the next batch meanwhile)."""
        found = self._look_up_ids(
            owner_id,
            ids,
            f"SELECT id FROM {_IDS_VIEW} WHERE {_ID_KEY} IN (SELECT id_key FROM {ROWS_TABLE})",
        )
        return pa.array([], pa.string()) if found is None else found.column(0).combine_chunks()

    def stored_targets(self, owner_id: str, ids: pa.Array) -> pa.Table:
        """See :class:`~eventport.events.store.EventStore`; read as :meth:`stored_ids` is."""
        found = self._look_up_ids(
            owner_id,
            ids,
            f"SELECT i.id, r.package_id, r.pixel_id FROM {_IDS_VIEW} i "
            f"JOIN {ROWS_TABLE} r ON r.id_key = {_ID_KEY}",
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
            deleted = self._widening(con, lambda: _run(con, statement, params))
        return int(deleted[0][0]) if deleted else 0

    def _look_up_ids(self, owner_id: str, ids: pa.Array, statement: str) -> pa.Table | None:
        """``statement`` run over the view ``_IDS_VIEW`` of ``ids`` (columns ``id``, ``id_hi``
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
                    self._lookup = _cursor(self._connection())
            cursor = self._lookup
            cursor.register(_IDS_VIEW, table)
            try:
                return self._widening(cursor, lambda: cursor.sql(statement).to_arrow_table())
            finally:
                cursor.unregister(_IDS_VIEW)

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
        """The batch checked, its rows with their keys (:func:`_with_keys`), and only the
        places and agents that the file may not hold yet: those of the keys this process has
        not committed (the insert's own anti-join stays the rule; skipping it for known keys
        saved 0.8 s of writing in a 5M enriched import, 10 ms a batch)."""
        checked = checked_batch(owner_id, batch)
        del batch
        tables: list[tuple[str, pa.Table]] = []
        if checked.num_rows:
            tables.append((_BATCH_VIEW, _with_keys(owner_id, checked.rows, self._id_keys)))
            for (table, key, _), frame in zip(
                _DIMENSION_TABLES, (checked.places, checked.agents), strict=True
            ):
                frame = frame.filter(self._shared.known[table].unknown(frame.column(key)))
                if frame.num_rows:
                    tables.append((_BATCH_DIMENSIONS[table], frame))
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
        _run(con, "BEGIN TRANSACTION")
        try:
            _save_checkpoint(con, values)
            batch.register(con)
            added: list[tuple[str, pa.ChunkedArray]] = []  # dimension keys, known once committed
            if batch.tables:
                held = dict(batch.tables)
                for table, key, _ in _DIMENSION_TABLES:
                    source = _BATCH_DIMENSIONS[table]
                    if source not in held:  # every key known committed (prepare_batch)
                        continue
                    # Only the batch's keys are held in memory: a NOT IN over the whole table
                    # hashed every stored key, and failed every batch once they outgrew the
                    # memory limit (1.5M places at 128 MB).
                    _run(
                        con,
                        f"INSERT INTO {table} SELECT * FROM {source} WHERE {key} NOT IN "
                        f"(SELECT {key} FROM {table} WHERE {key} IN "
                        f"(SELECT {key} FROM {source}))",
                    )
                    added.append((table, held[source].column(key)))
                del held
                keyed = batch.tables[0][1]
                self._delete_replaced(con, keyed, ids)
                _run(
                    con,
                    f"INSERT INTO {ROWS_TABLE} (id_key, {_ROW_NAMES_SQL}, {_SPELLED_KEYS}, "
                    f"id_uuid) SELECT {_ID_KEY}, "
                    f"{_ROW_VALUES_SQL['extras' in keyed.column_names]}, "
                    f"{_SPELLED_KEYS_SQL}, {_ID_UUID} FROM {_BATCH_VIEW}",
                )
                del keyed
                batch.let_go_of(con)
            self._before_commit()
            _run(con, "COMMIT")
            for table, keys in added:
                self._shared.known[table].add(keys)
        except BaseException:
            # A failed COMMIT has already ended the transaction; the first error matters.
            with contextlib.suppress(duckdb.Error):
                _run(con, "ROLLBACK")
            raise
        finally:
            batch.unregister(con)

    def _widening(self, cursor: duckdb.DuckDBPyConnection, attempt: Callable[[], T]) -> T:
        """``attempt()`` (a write's, or an import's look-up), made again at the full memory
        limit if it ran out of the write limit (see events/duckdb_pool.py)."""
        try:
            return attempt()
        except duckdb.OutOfMemoryException:
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
        params = _selection_params(query)
        self._connection()  # a closed store says so now, not at the first batch
        return _within_memory(self._export(query, params, schema, batch_rows), self._memory_limit)

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
        params = _selection_params(query)
        self._connection()
        lines = self._export_csv(query, params, layout, package_names or {}, chunk_rows)
        return _within_memory(lines, self._memory_limit)

    def aggregate(
        self, query: EventQuery, rollup: Rollup, breakdown: str
    ) -> Iterator[AggregateRow]:
        return one_aggregate(self, query, rollup, breakdown)

    def aggregates(
        self, query: EventQuery, kinds: Sequence[tuple[Rollup, str]]
    ) -> Iterator[tuple[Rollup, AggregateRow]]:
        for rollup, breakdown in kinds:
            check_aggregate(rollup, breakdown)
        params = _selection_params(query)
        self._connection()
        return _within_memory(self._aggregates(query, kinds, params), self._memory_limit)

    def checkpoint(self, import_id: str) -> Checkpoint | None:
        with self._lock:
            found = _run(
                self._connection(),
                f"SELECT {_CHECKPOINT_COLUMNS} FROM {CHECKPOINTS_TABLE} WHERE import_id = ?",
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
            found = _run(self._connection(), f"SELECT count(*) FROM {ROWS_TABLE}{where}", params)
        return int(found[0][0])

    def rows(self, owner_id: str) -> list[dict[str, Any]]:
        with self._lock:
            found = _run(
                self._connection(),
                f"SELECT {_SELECT_COLUMNS} FROM {EVENTS_TABLE} WHERE owner_id = ? "
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
        stored = int(_run(con, f"SELECT count(*) FROM {ROWS_TABLE}")[0][0])
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
        source = _BATCH_VIEW
        if ids is not None:
            maybe = ids.candidates(keyed.column("id_hi"), keyed.column("id_lo"), adding=True)
            if not len(maybe):
                return
            con.register(_BATCH_MAYBE, keyed.select(["id_hi", "id_lo"]).take(maybe))
            source = _BATCH_MAYBE
        try:
            _run(con, f"DELETE FROM {ROWS_TABLE} WHERE id_key IN (SELECT {_ID_KEY} FROM {source})")
        finally:
            if source == _BATCH_MAYBE:
                con.unregister(_BATCH_MAYBE)

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
        hours = _run(cursor, _EXPORT_PLAN, params)
        for low, high, rows in _windows(hours, self._window_rows) if hours else ():
            window = params | {
                "low": _utc_text(micros_to_datetime(low)),
                "high": params["end"] if high is None else _utc_text(micros_to_datetime(high)),
            }
            yield window, rows

    def _export(
        self, query: EventQuery, params: dict[str, object], schema: pa.Schema, batch_rows: int
    ) -> Iterator[pa.RecordBatch]:
        if not (query.package_ids or query.pixel_ids):
            return
        names = list(schema.names)
        fetched = [*names, *(key for key in _SORT_KEYS if key not in names)]
        listed = ", ".join(f"e.{_q(name)}" for name in fetched)
        statement = f"SELECT {listed} {_selected_from(fetched)}{_SELECTED_WHERE} {_IN_WINDOW}"
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
                f"LEFT JOIN {_NAMES_VIEW} n ON e.package_id = n.id "
                f"LEFT JOIN {_NAMES_VIEW} pn ON e.pixel_id = pn.id "
            )
        texts = _DimensionTexts(layout)
        statement = (
            f"SELECT e.time AS {SORT_TIME}, {_row_value('id', 'e')} AS {SORT_ID}, "
            f"{texts.line} AS {LINE} "
            f"FROM {ROWS_TABLE} e {texts.joins}"
            f"LEFT JOIN {_PACKAGES_VIEW} p ON e.package_id = p.id "
            f"LEFT JOIN {_PIXELS_VIEW} x ON e.pixel_id = x.id "
            f"{names}{_SELECTED_WHERE} {_IN_WINDOW}"
        )
        ordered = f"{statement} ORDER BY {SORT_TIME}, {SORT_ID}"
        with self._snapshot_readers(query, self._export_workers) as cursors:
            tables = texts.tables(cursors[0], params)  # the export's snapshot
            for cursor in cursors:
                for name, table in tables.items():
                    cursor.register(name, table)
                if names:
                    cursor.register(_NAMES_VIEW, _names_table(package_names))
            waiting = deque(self._planned_windows(cursors[0], params))
            if self._scattered(cursors[0], waiting):
                everything = params | {"low": params["start"], "high": params["end"]}
                yield from _sorted_by_duckdb(cursors[0], ordered, everything, chunk_rows)
                return
            sorted_windows: WindowPipeline[pa.Array] = WindowPipeline(cursors)

            def start_windows() -> None:
                """Start the next windows on the free cursors (not an hour with more events
                than a window: that one runs alone)."""
                while waiting and not sorted_windows.full and waiting[0][1] <= self._window_rows:
                    sorted_windows.submit(_sorted_window, statement, waiting.popleft()[0])

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
                    yield from _sorted_by_duckdb(cursors[0], ordered, window, chunk_rows)
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
        _run(cursor, _WINDOW_COUNT, window)
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
                cursors.extend(_cursor(connection) for _ in range(count))
                self._pool.read_started(cursors[0])  # the full memory limit, before any read
                reading = True
                for cursor in cursors:
                    _run(cursor, "BEGIN TRANSACTION")
                    _run(cursor, f"SELECT count(*) FROM {EVENTS_TABLE} WHERE false")
            for cursor in cursors:
                for name, table in _selection_tables(query).items():
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
        """by-variable's items (see ``_BY_VARIABLE``), with those that hold an escape decoded
        in Python and registered on every cursor (read in the cursors' snapshot: an item
        imported meanwhile is not left undecoded)."""
        items = _ITEMS.format(period=_PERIODS[rollup], artifact=_ARTIFACT)
        escaped = _run(cursors[0], _ESCAPED_ITEMS.format(items=items), params)
        pairs = [variable_pair(row[0]) for row in escaped]
        decoded = pa.table(
            {
                "item": pa.array([row[0] for row in escaped], pa.string()),
                "variable": pa.array([pair[0] for pair in pairs], pa.string()),
                "value": pa.array([pair[1] for pair in pairs], pa.string()),
            }
        )
        for cursor in cursors:
            cursor.register(_ITEMS_VIEW, decoded)
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
        hours = _run(cursors[0], _EXPORT_PLAN, params)
        artifacts: list[str] | None = None  # by-variable's rows name their artifacts
        statements: dict[bool, str]  # whole parts (False) and shards (True)
        if breakdown == "by-variable":
            items = self._variable_items(cursors, rollup, params)
            statements = {
                sharded: _BY_VARIABLE.format(items=items, in_shard=_in_shard("i", sharded))
                for sharded in (False, True)
            }
        else:
            statements = {s: _aggregate_sql(rollup, breakdown, s) for s in (False, True)}
            artifacts = _artifacts(query)
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
                | {"start": _utc_text(part.low), "end": _utc_text(part.high)}
                | ({"shards": part.shards, "shard": shard} if part.shards > 1 else {}),
            )
            for part in parts
            for shard in range(part.shards)
        )

        def start_shards() -> None:
            while shards and not counted.full:
                counted.submit(_counted_shard, *shards.popleft())

        try:
            start_shards()
            for part in parts:  # its shards finish in the order they started
                tables = []
                for _ in range(part.shards):
                    tables.append(counted.take_oldest())
                    start_shards()  # before handing this one on, so that they overlap
                table = tables[0] if len(tables) == 1 else _added_up(tables)
                for batch in table.to_batches():
                    yield from _aggregate_rows(batch, breakdown, artifacts)
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
        self.known = {table: KnownKeys() for table, _, _ in _DIMENSION_TABLES}
        self.users = 0
        # One export or aggregate at a time: each may use the whole memory limit (its parts
        # and windows are sized as if it ran alone). Side by side, requests that fit alone ran
        # out of it: 19 of 20 concurrent ones answered 503 at 128 MB, and a CSV ended midway.
        self.reads = threading.BoundedSemaphore(1)


_SHARED_FILES: dict[str, _SharedFile] = {}
_SHARED_LOCK = threading.Lock()


def _share_file(
    path: Path, config: _Config, row_group_rows: int
) -> tuple[_SharedFile, duckdb.DuckDBPyConnection]:
    """The file's shared state, opening it with ``config`` if this process has not, and a
    cursor of its database for one store object."""
    name = str(path.resolve())
    with _SHARED_LOCK:
        shared = _SHARED_FILES.get(name)
        if shared is None:
            database = _open_file(path, config, row_group_rows)
            shared = _SHARED_FILES[name] = _SharedFile(name, database)
        cursor = _cursor(shared.database)
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


def _aggregate_rows(
    batch: pa.RecordBatch, breakdown: str, artifacts: Sequence[str] | None = None
) -> Iterator[AggregateRow]:
    """Rows of (date, artifact, value..., total, total_unique) as AggregateRows; with
    ``artifacts``, the rows hold artifact numbers, places in that list."""
    columns = [column.to_pylist() for column in batch.columns]
    dates, artifacts_, totals, uniques = columns[0], columns[1], columns[-2], columns[-1]
    if artifacts is not None:
        artifacts_ = [artifacts[n] for n in artifacts_]
    values = list(zip(*columns[2:-2], strict=True)) if len(columns) > 4 else [()] * batch.num_rows
    for i in range(batch.num_rows):
        yield AggregateRow(dates[i], artifacts_[i], breakdown, values[i], totals[i], uniques[i])


_OLD_EVENTS = "events_before_row_tables"


def compact_file(path: Path) -> tuple[int, int, int]:
    """Rewrite the embedded store at ``path`` into a new file, events in time order and whole
    row groups (of :data:`COMPACTED_ROW_GROUP_ROWS`), with this version's layout; the new file
    then replaces the old one: (events, row groups before, after). No process may have the
    store open (the server stopped).

    Events imported out of time order, or by an earlier version that left partial row groups,
    make every export and aggregate read more of the table than its time range (each row
    group's min and max times cover the whole range); after this, DuckDB skips the row groups
    outside it. The old file stays as it was, and locked, until the new one is complete; a
    failure leaves it untouched (and deletes the new file). A new
    file, not a rewrite in place, so the store does not keep the old rows' space.
    """
    fresh_path = path.with_name(path.name + ".compacting")
    for leftover in (fresh_path, fresh_path.with_name(fresh_path.name + ".wal")):
        leftover.unlink(missing_ok=True)
    old = DuckDBEventStore(path)  # its setup brings an older file's columns up to date
    try:
        old.setup()
        before = _row_groups(old._connection())
    finally:
        old.close()
    try:
        events, after = _compacted_into(path, fresh_path)
    except BaseException:  # the new file is of no use; the old one is as it was
        for leftover in (fresh_path, fresh_path.with_name(fresh_path.name + ".wal")):
            with contextlib.suppress(OSError):
                leftover.unlink(missing_ok=True)
        raise
    fresh_path.replace(path)
    return events, before, after


def _compacted_into(path: Path, fresh_path: Path) -> tuple[int, int]:
    """:func:`compact_file`'s new file, written: (events, row groups)."""
    fresh = DuckDBEventStore(fresh_path, row_group_rows=COMPACTED_ROW_GROUP_ROWS)
    try:
        fresh.setup()
        con = fresh._connection()
        _attach(con, path, _OLD_STORE, "READ_ONLY")
        try:
            _refuse_unknown_layout(con)
            for table in (PLACES_TABLE, AGENTS_TABLE, CHECKPOINTS_TABLE):
                names = ", ".join(_q(n) for n in _columns_in_order(con, table))
                _run(
                    con,
                    f"INSERT INTO {table} ({names}) SELECT {names} FROM {_OLD_STORE}.{table}",
                )
            columns = _columns_in_order(con, ROWS_TABLE)
            names = ", ".join(_q(n) for n in columns)
            values = ", ".join(_COMPACTED.get(n, _q(n)) for n in columns)
            # One transaction: its rows fill whole row groups across the windows (a commit
            # per window left a small row group after each: 100 instead of 82 for 10M).
            _run(con, "BEGIN TRANSACTION")
            for low, high in _compaction_windows(con, f"{_OLD_STORE}.{ROWS_TABLE}"):
                _run(
                    con,
                    f"INSERT INTO {ROWS_TABLE} ({names}) SELECT {values} "
                    f"FROM {_OLD_STORE}.{ROWS_TABLE} "
                    "WHERE time >= make_timestamptz(CAST($low AS BIGINT)) "
                    "AND time < make_timestamptz(CAST($high AS BIGINT)) "
                    "ORDER BY time, id_key",
                    {"low": low, "high": high},
                )
            _run(con, "COMMIT")
            _run(con, "CHECKPOINT")
            events = int(_run(con, f"SELECT count(*) FROM {ROWS_TABLE}")[0][0])
            after = _row_groups(con)
        finally:  # after a failure the open transaction may refuse; closing detaches anyway
            with contextlib.suppress(duckdb.Error):
                _run(con, f"DETACH {_OLD_STORE}")
    finally:
        fresh.close()
    return events, after


def _layout(con: duckdb.DuckDBPyConnection, catalog: str) -> set[tuple[str, str]]:
    """(table, column) of every table and view of the database ``catalog``."""
    found = _run(
        con,
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_catalog = ? AND table_schema = 'main'",
        [catalog],
    )
    return {(table, column) for table, column in found}


def _refuse_unknown_layout(con: duckdb.DuckDBPyConnection) -> None:
    """Compaction copies the tables and columns this version knows: a store with others (a
    newer eventport's) would lose them, silently. It is refused, saying so."""
    here = str(_run(con, "SELECT current_database()")[0][0])
    unknown = sorted(_layout(con, _OLD_STORE) - _layout(con, here))
    if unknown:
        listed = ", ".join(f"{table}.{column}" for table, column in unknown[:5])
        raise EventStoreError(
            f"the event store holds what this version of eventport does not know ({listed}"
            f"{', …' if len(unknown) > 5 else ''}): a newer version wrote it, and compacting "
            "would lose it; compact it with that version. Nothing was changed."
        )


_OLD_STORE = "eventport_old_store"
# How long an export or aggregate waits for the one before it (see _SharedFile.reads).
READ_WAIT_SECONDS = 60.0
# Compaction keeps the UUID ids an earlier version stored as text as their numbers, and its
# derived ids not at all (_ID_UUID).
_UUID_TEXT = IS_UUID_SQL.format(id="id")
_DERIVED_TEXT = f"id = {DERIVED_ID_SQL.format(import_id='import_id', line='line')}"
_COMPACTED = {
    "id": f"CASE WHEN {_UUID_TEXT} OR {_DERIVED_TEXT} THEN NULL ELSE id END",
    "id_uuid": f"coalesce(id_uuid, CASE WHEN {_UUID_TEXT} THEN CAST(id AS UUID) END)",
}


def _sql_text(text: str) -> str:
    return text.replace("'", "''")


def _columns_in_order(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    found = _run(
        con,
        "SELECT column_name FROM information_schema.columns WHERE table_catalog = "
        "current_database() AND table_schema = current_schema() AND table_name = ? "
        "ORDER BY ordinal_position",
        [table],
    )
    return [row[0] for row in found]


_COMPACTION_WINDOW_ROWS = 250_000  # a window of the rows sorted at once (fits 128 MB)


def _compaction_windows(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[int, int]]:
    """Consecutive time ranges (epoch microseconds, end exclusive) covering every row, each of
    about _COMPACTION_WINDOW_ROWS rows (a single busier hour is one window): sorting all rows
    in one go ran out of DuckDB's 128 MB buffer on 10M events."""
    hours = _run(
        con,
        f"SELECT epoch_us(date_trunc('hour', make_timestamp(epoch_us(time)))) AS h, count(*) "
        f"FROM {table} GROUP BY h ORDER BY h",
    )
    windows: list[tuple[int, int]] = []
    start, rows = None, 0
    for hour, count in hours:
        if start is None:
            start = hour
        elif rows + count > _COMPACTION_WINDOW_ROWS:
            windows.append((start, hour))
            start, rows = hour, 0
        rows += count
    if start is not None:
        windows.append((start, hours[-1][0] + 3_600_000_000))
    return windows


def _row_groups(con: duckdb.DuckDBPyConnection) -> int:
    found = _run(
        con,
        f"SELECT count(DISTINCT row_group_id) FROM pragma_storage_info('{ROWS_TABLE}')",
    )
    return int(found[0][0])


def _columns_of(con: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    return set(_columns_in_order(con, table))


def _fold_extras(con: duckdb.DuckDBPyConnection) -> None:
    """A row table from before ``extras`` (in setup's transaction): the values of its columns
    that now live there are moved into it, and the columns dropped."""
    have = _columns_of(con, ROWS_TABLE)
    if "extras" in have:
        return
    _run(con, f"ALTER TABLE {ROWS_TABLE} ADD COLUMN extras VARCHAR")
    old = [name for name in _EXTRAS if name in have]
    if not old:
        return
    _run(con, f"DROP VIEW IF EXISTS {EVENTS_TABLE}")  # made again, by the new columns, after
    any_set = " OR ".join(f"{_q(n)} IS NOT NULL" for n in old)
    _run(con, f"UPDATE {ROWS_TABLE} SET extras = {_extras_sql(old)} WHERE {any_set}")
    for name in old:
        _run(con, f"ALTER TABLE {ROWS_TABLE} DROP COLUMN {_q(name)}")


def _migrate_wide_events(con: duckdb.DuckDBPyConnection) -> None:
    """Move the events of a file from before the row tables into them (in setup's
    transaction). Places and agents get negative keys, numbered here: content-hash keys
    (events/batch.py) are never negative, so the two never meet."""
    have = _columns_of(con, _OLD_EVENTS)

    def value(name: str, table: str = "") -> str:
        if name in have:
            return f"{table}{_q(name)}"
        return f"CAST(NULL AS {_SQL_TYPES[_COLUMN_OF[name].type].split()[0]})"

    for table, key, fields in _DIMENSION_TABLES:
        listed = ", ".join(value(n) for n in fields)
        known = " OR ".join(f"{value(n)} IS NOT NULL" for n in fields)
        _run(
            con,
            f"INSERT INTO {table} ({key}, {', '.join(_q(n) for n in fields)}) "
            f"SELECT -row_number() OVER (), * FROM (SELECT DISTINCT {listed} "
            f"FROM {_OLD_EVENTS} WHERE {known})",
        )
    joins = []
    for alias, (table, _, fields) in zip(("p", "a"), _DIMENSION_TABLES, strict=True):
        on = " AND ".join(f"{alias}.{_q(n)} IS NOT DISTINCT FROM {value(n, 'o.')}" for n in fields)
        joins.append(f"LEFT JOIN {table} {alias} ON {on}")
    listed = ", ".join(value(c.name, "o.") for c in _ROW_COLUMNS)
    extras = _extras_sql([n for n in _EXTRAS if n in have], "o.")
    _run(
        con,
        f"INSERT INTO {ROWS_TABLE} (id_key, {_ROW_NAMES_SQL}, origin_key) "
        f"SELECT o.id_key, {listed}, p.place_key, a.agent_key, {extras}, "
        f"{ORIGIN_KEY_SQL.format(origin=value('origin_id', 'o.'))} FROM {_OLD_EVENTS} o "
        + " ".join(joins),
    )
    _run(con, f"DROP TABLE {_OLD_EVENTS}")
