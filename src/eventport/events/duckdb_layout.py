"""The embedded store's tables: how an event row is laid out, written and read back.

See :mod:`eventport.events.duckdb_store` for the layout and why. Here: the row, place and agent
tables and the view that joins them into the events table's columns; the SQL that writes a
batch's rows and checkpoint; the connection to the file; and an older file's tables brought up
to this layout in place (at set-up).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from eventport.events.batch import AGENT_FIELDS, PLACE_FIELDS, ROW_PLACE_FIELDS, ROW_SCHEMA
from eventport.events.keys import (
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
    Column,
    ColumnType,
    derived_ids,
)
from eventport.events.store import (
    CHECKPOINT_FIELDS,
    CHECKPOINTS_TABLE,
    EVENTS_TABLE,
    distinct_texts,
)


def quoted(name: str) -> str:
    return f'"{name}"'


SQL_TYPES: dict[ColumnType, str] = {
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
EXTRAS = ("origin_id", "endpoint_id", "confidence", "mtc_quota_exceeded", "remote_address")
ROW_COLUMNS = [c for c in COLUMNS if c.name in ROW_SCHEMA.names and c.name not in EXTRAS]
ROW_NAMES_SQL = ", ".join(
    [*(quoted(c.name) for c in ROW_COLUMNS), "place_key", "agent_key", "extras"]
)


def _extras_sql(names: Sequence[str], table: str = "") -> str:
    """The ``extras`` text of the columns ``names`` of ``table`` (a prefix such as "o.")."""
    if not names:
        return "CAST(NULL AS VARCHAR)"
    missing = " AND ".join(f"{table}{quoted(n)} IS NULL" for n in names)
    pairs = ", ".join(f"'{n}', CAST({table}{quoted(n)} AS VARCHAR)" for n in names)
    return f"CASE WHEN {missing} THEN NULL ELSE CAST(json_object({pairs}) AS VARCHAR) END"


# The values of a batch's rows (the batch view's columns) in ROW_NAMES_SQL's order: with the
# batch's ``extras`` where with_keys found them all null (nearly every batch: the five columns
# are then not read at all), else made from the five columns. Made from them in every batch, the
# five columns read and tested for each row cost what leaving them out saved.
ROW_VALUES_SQL = {
    folded: ", ".join(
        [
            *(quoted(c.name) for c in ROW_COLUMNS),
            "place_key",
            "agent_key",
            "extras" if folded else _extras_sql(EXTRAS),
        ]
    )
    for folded in (True, False)
}
DIMENSION_TABLES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (PLACES_TABLE, "place_key", PLACE_FIELDS),
    (AGENTS_TABLE, "agent_key", AGENT_FIELDS),
)
# The events columns a dimension table gives (by its alias; the rest, ROW_PLACE_FIELDS among
# them, are the row table's), and how each table is joined to the rows (aliased r).
JOINED = {n: "p" for n in PLACE_FIELDS if n not in ROW_PLACE_FIELDS} | dict.fromkeys(
    AGENT_FIELDS, "a"
)
JOINS = {
    "p": f"LEFT JOIN {PLACES_TABLE} p ON p.place_key = r.place_key",
    "a": f"LEFT JOIN {AGENTS_TABLE} a ON a.agent_key = r.agent_key",
}
BATCH_PLACES = "eventport_batch_places"
BATCH_AGENTS = "eventport_batch_agents"
# The name each dimension table's rows in a batch are registered under.
BATCH_DIMENSIONS = {PLACES_TABLE: BATCH_PLACES, AGENTS_TABLE: BATCH_AGENTS}
BATCH_VIEW = "eventport_batch"
BATCH_MAYBE = "eventport_batch_maybe"  # the batch's ids the id filter may hold
IDS_VIEW = "eventport_ids"
PACKAGES_VIEW = "eventport_packages"
PIXELS_VIEW = "eventport_pixels"
ITEMS_VIEW = "eventport_items"


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


def defined(name: str, sql_type: str) -> str:
    """A row table column's name and type, with its compression where one is named."""
    named = _COMPRESSION.get(name)
    return f"{quoted(name)} {sql_type}" + (f" USING COMPRESSION {named}" if named else "")


def column_sql(name: str, type_: ColumnType, nullable: bool) -> str:
    return defined(name, SQL_TYPES[type_]) + ("" if nullable else " NOT NULL")


# An event id that is a canonical UUID (36 characters, lowercase hex in groups of 8-4-4-4-12:
# what most $unique_ids are) is kept only as the number it spells, in ``id_uuid`` (DuckDB's
# UUID, 16 bytes), with a null ``id``; DuckDB gives exactly that text back. Measured on 2M ids
# written apart, as the writer does: 0.68-0.79 s and 41 MB against 0.81-0.93 s and 81 MB.
# The id an import derives for a line without $unique_id (schema.derived_ids: ~43 bytes) is
# not kept at all: both null, reads make it again from the row's import id and line. Any
# other id (an upper-case UUID, say) stays text.
ID_UUID_SQL = defined("id_uuid", "UUID")
ID_UUID = f"CAST({KEY_FROM_HALVES_SQL.format(prefix='id_uuid')} AS UUID)"


def row_column_sql(column: Column) -> str:
    """A row table column's definition: the id may be null there (when ``id_uuid`` holds it)."""
    nullable = column.nullable or column.name == "id"
    return column_sql(column.name, column.type, nullable)


_COLUMNS_SQL = ", ".join(quoted(n) for n in COLUMN_NAMES)
COLUMN_OF = {c.name: c for c in COLUMNS}
# origin_key: the origin id as a 128-bit number, what aggregates count distinct values of
# (2.3x faster than counting 32-character texts, measured on 10M events); see events/keys.py.
# A batch brings both keys as UBIGINT halves (computed before the lock); rows stored before
# get theirs from the SQL definitions.
ID_KEY = KEY_FROM_HALVES_SQL.format(prefix="id")
# Origin and endpoint ids are (nearly always) 32 hex digits: a row keeps such an id only as the
# number it spells (origin_key, endpoint_key: 16 bytes, not 32 uncompressed), with no text;
# any other text stays as it is, in the row's extras. Reads give the text back from the number.
# Measured on 5M enriched events: the file 633 MB instead of 868. By column, its key's prefix.
_SPELLED = {"origin_id": "origin", "endpoint_id": "endpoint"}
SPELLED_KEYS = ", ".join(f"{prefix}_key" for prefix in _SPELLED.values())
SPELLED_KEYS_SQL = ", ".join(KEY_FROM_HALVES_SQL.format(prefix=p) for p in _SPELLED.values())


def row_value(name: str, table: str) -> str:
    """A row column's value, read from the row table aliased ``table``."""
    if name == "id":
        derived = DERIVED_ID_SQL.format(import_id=f"{table}.import_id", line=f"{table}.line")
        return f"coalesce({table}.id, CAST({table}.id_uuid AS VARCHAR), {derived})"
    if name in EXTRAS:
        text = f"json_extract_string({table}.extras, '$.{name}')"
        kind = COLUMN_OF[name].type
        value = text if kind == "text" else f"CAST({text} AS {SQL_TYPES[kind]})"
        if name in _SPELLED:
            key = f"{table}.{_SPELLED[name]}_key"
            return f"coalesce({value}, lpad(lower(hex({key})), 32, '0'))"
        return value
    return f"{table}.{quoted(name)}"


def view_sql() -> str:
    """The events table's columns, in order, from the row and dimension tables."""
    listed = ", ".join(
        f"{JOINED[name]}.{quoted(name)}"
        if name in JOINED
        else f"{row_value(name, 'r')} AS {quoted(name)}"
        for name in COLUMN_NAMES
    )
    return (
        f"CREATE OR REPLACE VIEW {EVENTS_TABLE} AS SELECT r.id_key, {listed} "
        f"FROM {ROWS_TABLE} r " + " ".join(JOINS.values())
    )


# Times leave DuckDB as epoch microseconds: fetching TIMESTAMPTZ as Python objects needs pytz.
SELECT_COLUMNS = ", ".join(
    f"epoch_us({quoted(c.name)})" if c.type == "timestamp" else quoted(c.name) for c in COLUMNS
)
CHECKPOINT_COLUMNS = ", ".join(quoted(f) for f in CHECKPOINT_FIELDS)
# A checkpoint is written by UPDATE, and by INSERT only when no row was there (the import's
# first batch): under the write lock nothing else writes one between the two. An upsert
# (INSERT ... ON CONFLICT DO UPDATE) took ~4.2 ms a batch against ~1.1 ms (measured apart,
# in batches of 61,440 events; ~8.5 ms in the server, the other vCPU busy).
_UPDATE_CHECKPOINT = (
    f"UPDATE {CHECKPOINTS_TABLE} SET "
    + ", ".join(f"{quoted(f)} = ?" for f in CHECKPOINT_FIELDS[1:])
    + f", updated_at = now() WHERE {quoted(CHECKPOINT_FIELDS[0])} = ?"
)
_INSERT_CHECKPOINT = (
    f"INSERT INTO {CHECKPOINTS_TABLE} ({CHECKPOINT_COLUMNS}, updated_at) "
    f"VALUES ({', '.join('?' for _ in CHECKPOINT_FIELDS)}, now())"
)


def save_checkpoint(con: duckdb.DuckDBPyConnection, values: list[object]) -> None:
    """Write an import's checkpoint (``values`` in CHECKPOINT_FIELDS order), in the caller's
    transaction."""
    ((updated,),) = fetch_all(con, _UPDATE_CHECKPOINT, [*values[1:], values[0]])
    if not updated:
        fetch_all(con, _INSERT_CHECKPOINT, values)


def fetch_all(
    con: duckdb.DuckDBPyConnection,
    query: str,
    params: Sequence[object] | Mapping[str, object] | None = None,
) -> list[tuple[Any, ...]]:
    """Execute and fetch everything: DuckDB refuses other work on a connection (registering a
    table, say) while a result is still unread, so no statement leaves one behind."""
    return con.execute(query, params).fetchall()


def with_keys(owner_id: str, rows: pa.Table, id_keys: RecentIdKeys) -> pa.Table:
    """The batch's rows with the halves of their id, origin and endpoint keys (events/keys.py),
    and without the origin and endpoint texts the keys spell (see _SPELLED). Where the columns
    that live in ``extras`` are all null, they are left out for an ``extras`` column of nulls
    (see ROW_VALUES_SQL)."""
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
    if all(rows.column(name).null_count == rows.num_rows for name in EXTRAS):
        rows = rows.drop_columns(list(EXTRAS))
        rows = rows.append_column("extras", pa.nulls(rows.num_rows, pa.string()))
    return rows


def _id_texts(rows: pa.Table, spelled: pa.Array) -> pa.Array | pa.ChunkedArray:
    """The id texts the rows keep (see ID_UUID): none where the id is a UUID (``spelled``)
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
Config = dict[str, str | bool | int | float | list[str]]  # a DuckDB database's settings


def attach(con: duckdb.DuckDBPyConnection, path: Path, alias: str, options: str) -> None:
    """ATTACH the DuckDB file at ``path`` to ``con`` as ``alias``, with ``options``."""
    fetch_all(con, f"ATTACH '{_sql_text(str(path))}' AS {alias} ({options})")


def open_file(path: Path, config: Config, row_group_rows: int) -> duckdb.DuckDBPyConnection:
    """A connection whose default database is the file at ``path`` (created if missing), with
    new rows grouped by ``row_group_rows``: attached to an in-memory database, since only
    ATTACH takes a row group size. DuckDB spills to ``<file>.tmp``, as for a file it opens."""
    con = duckdb.connect(config={**config, "temp_directory": f"{path}.tmp"})
    try:
        attach(con, path, _FILE, f"ROW_GROUP_SIZE {row_group_rows}")
        fetch_all(con, f"USE {_FILE}")
    except BaseException:
        con.close()
        raise
    return con


def file_cursor(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """A cursor of ``con`` (a connection of its own to the same database) reading the file:
    a new cursor's default database is the in-memory one."""
    cursor = con.cursor()
    fetch_all(cursor, f"USE {_FILE}")
    return cursor


OLD_EVENTS = "events_before_row_tables"


def layout_of(con: duckdb.DuckDBPyConnection, catalog: str) -> set[tuple[str, str]]:
    """(table, column) of every table and view of the database ``catalog``."""
    found = fetch_all(
        con,
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_catalog = ? AND table_schema = 'main'",
        [catalog],
    )
    return {(table, column) for table, column in found}


def _sql_text(text: str) -> str:
    return text.replace("'", "''")


def columns_in_order(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    found = fetch_all(
        con,
        "SELECT column_name FROM information_schema.columns WHERE table_catalog = "
        "current_database() AND table_schema = current_schema() AND table_name = ? "
        "ORDER BY ordinal_position",
        [table],
    )
    return [row[0] for row in found]


def columns_of(con: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    return set(columns_in_order(con, table))


def fold_extras(con: duckdb.DuckDBPyConnection) -> None:
    """A row table from before ``extras`` (in setup's transaction): the values of its columns
    that now live there are moved into it, and the columns dropped."""
    have = columns_of(con, ROWS_TABLE)
    if "extras" in have:
        return
    fetch_all(con, f"ALTER TABLE {ROWS_TABLE} ADD COLUMN extras VARCHAR")
    old = [name for name in EXTRAS if name in have]
    if not old:
        return
    fetch_all(con, f"DROP VIEW IF EXISTS {EVENTS_TABLE}")  # made again, by the new columns, after
    any_set = " OR ".join(f"{quoted(n)} IS NOT NULL" for n in old)
    fetch_all(con, f"UPDATE {ROWS_TABLE} SET extras = {_extras_sql(old)} WHERE {any_set}")
    for name in old:
        fetch_all(con, f"ALTER TABLE {ROWS_TABLE} DROP COLUMN {quoted(name)}")


def migrate_wide_events(con: duckdb.DuckDBPyConnection) -> None:
    """Move the events of a file from before the row tables into them (in setup's
    transaction). Places and agents get negative keys, numbered here: content-hash keys
    (events/batch.py) are never negative, so the two never meet."""
    have = columns_of(con, OLD_EVENTS)

    def value(name: str, table: str = "") -> str:
        if name in have:
            return f"{table}{quoted(name)}"
        return f"CAST(NULL AS {SQL_TYPES[COLUMN_OF[name].type].split()[0]})"

    for table, key, fields in DIMENSION_TABLES:
        listed = ", ".join(value(n) for n in fields)
        known = " OR ".join(f"{value(n)} IS NOT NULL" for n in fields)
        fetch_all(
            con,
            f"INSERT INTO {table} ({key}, {', '.join(quoted(n) for n in fields)}) "
            f"SELECT -row_number() OVER (), * FROM (SELECT DISTINCT {listed} "
            f"FROM {OLD_EVENTS} WHERE {known})",
        )
    joins = []
    for alias, (table, _, fields) in zip(("p", "a"), DIMENSION_TABLES, strict=True):
        on = " AND ".join(
            f"{alias}.{quoted(n)} IS NOT DISTINCT FROM {value(n, 'o.')}" for n in fields
        )
        joins.append(f"LEFT JOIN {table} {alias} ON {on}")
    listed = ", ".join(value(c.name, "o.") for c in ROW_COLUMNS)
    extras = _extras_sql([n for n in EXTRAS if n in have], "o.")
    fetch_all(
        con,
        f"INSERT INTO {ROWS_TABLE} (id_key, {ROW_NAMES_SQL}, origin_key) "
        f"SELECT o.id_key, {listed}, p.place_key, a.agent_key, {extras}, "
        f"{ORIGIN_KEY_SQL.format(origin=value('origin_id', 'o.'))} FROM {OLD_EVENTS} o "
        + " ".join(joins),
    )
    fetch_all(con, f"DROP TABLE {OLD_EVENTS}")
