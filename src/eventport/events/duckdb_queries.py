"""The embedded store's export and aggregate SQL, and the helpers that run it.

See :mod:`eventport.events.duckdb_store` for how exports and aggregates are spread over
cursors. Everything here reads the row and dimension tables of
:mod:`eventport.events.duckdb_layout`; the selected artifacts travel as registered Arrow
tables, never spliced into the SQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import TypeVar

import duckdb
import pyarrow as pa

from eventport.domain.errors import OutOfMemory
from eventport.events.batch import AGENT_FIELDS, PLACE_FIELDS
from eventport.events.duckdb_csv import (
    FIELDS,
    LINE,
    Pieces,
    fields_sql,
    sorted_lines,
    text_field,
    text_of,
)
from eventport.events.duckdb_layout import (
    AGENTS_TABLE,
    EXTRAS,
    ITEMS_VIEW,
    JOINED,
    JOINS,
    PACKAGES_VIEW,
    PIXELS_VIEW,
    PLACES_TABLE,
    ROWS_TABLE,
    SQL_TYPES,
    quoted,
    row_value,
)
from eventport.events.duckdb_pool import ran_out_of_memory, size_bytes
from eventport.events.schema import (
    COLUMNS,
    ColumnType,
)
from eventport.events.store import COUNTED_SQL, BreakdownSql, periods_sql
from eventport.export.csv import CsvColumn, CsvLayout
from eventport.export.query import (
    BREAKDOWNS,
    ORGANIZATION_KINDS,
    AggregateRow,
    EventQuery,
    Rollup,
)


def _events_from(needed: Iterable[str] = ()) -> str:
    """The events, aliased ``e``, with only the dimension tables whose columns are ``needed``
    joined in (the view EVENTS_TABLE joins both, and DuckDB does not drop an unused LEFT JOIN):
    a daily count reads the row table alone, a by-country count joins only the places."""
    wanted = set(needed)
    joined = [name for name in JOINED if name in wanted]
    derived = [name for name in EXTRAS if name in wanted]
    if not joined and not derived and "id" not in wanted:
        return f"{ROWS_TABLE} e "
    listed = ", ".join(
        [
            f"r.* REPLACE ({row_value('id', 'r')} AS id)" if "id" in wanted else "r.*",
            *(f"{row_value(n, 'r')} AS {quoted(n)}" for n in derived),
            *(f"{JOINED[n]}.{quoted(n)}" for n in joined),
        ]
    )
    aliases = {JOINED[n] for n in joined}
    joins = "".join(f" {join}" for alias, join in JOINS.items() if alias in aliases)
    return f"(SELECT {listed} FROM {ROWS_TABLE} r{joins}) e "


def selected_from(needed: Iterable[str] = ()) -> str:
    return (
        f"FROM {_events_from(needed)}"
        f"LEFT JOIN {PACKAGES_VIEW} p ON e.package_id = p.id "
        f"LEFT JOIN {PIXELS_VIEW} x ON e.pixel_id = x.id "
    )


SELECTED_WHERE = (
    "WHERE e.owner_id = $owner "
    "AND e.time >= CAST($start AS TIMESTAMPTZ) AND e.time < CAST($end AS TIMESTAMPTZ) "
    "AND (p.id IS NOT NULL OR x.id IS NOT NULL)"
)
# The query's events: one owner, start <= time < end, and of the selected packages or pixels.
# ``artifact`` is the package when selected, else the pixel's artifact (see EventQuery).
_SELECTION = selected_from() + SELECTED_WHERE  # columns of the row table only
ARTIFACT = "coalesce(p.id, x.artifact)"
_ARTIFACT_NUMBER = "coalesce(p.n, x.n)"  # its place in sorted_artifacts(query): the same order
# A naive TIMESTAMP of the UTC wall clock: periods then do not depend on the session time zone.
_UTC = "make_timestamp(epoch_us(e.time))"
PERIODS = periods_sql(_UTC)
_COUNTS = ("total", "total_unique")  # an aggregate's two counts, after its group keys
_SHARDS_VIEW = "aggregate_shards"  # the rows of a part's shards, added up
# The events of one shard of an aggregate's part (see added_up); hash(NULL) is a number
# too, so events without an origin fall in one shard and are counted once. A part counted
# whole has ``true`` in its place (no origin hashed).
_IN_SHARD = "hash({alias}.origin_key) % CAST($shards AS UBIGINT) = CAST($shard AS UBIGINT)"


def shard_condition(alias: str, sharded: bool) -> str:
    return _IN_SHARD.format(alias=alias) if sharded else "true"


# by-variable: the items of ``variables``; items holding an escape are decoded in Python
# (``variable_pair``: DuckDB's url_decode fails on invalid UTF-8 and keeps '+'), the others
# are split here, the same way (on the first '=').
ITEMS = (
    "SELECT {period} AS d, {artifact} AS artifact, e.id_key, e.origin_key, "
    "unnest(string_split(e.variables, '&')) AS item "
    f"{_SELECTION} AND {COUNTED_SQL} AND e.variables <> ''"
)
ESCAPED_ITEMS = (
    "SELECT DISTINCT item FROM ({items}) WHERE contains(item, '%') OR contains(item, '+')"
)
_SPLIT_VARIABLE = (
    "CASE WHEN strpos(i.item, '=') > 0 THEN left(i.item, strpos(i.item, '=') - 1) ELSE i.item END"
)
_SPLIT_VALUE = (
    "CASE WHEN strpos(i.item, '=') > 0 THEN substr(i.item, strpos(i.item, '=') + 1) ELSE '' END"
)
BY_VARIABLE = (
    "SELECT d, artifact, variable, value, count(DISTINCT id_key) AS total, "
    "count(DISTINCT origin_key) AS total_unique "
    "FROM (SELECT i.d, i.artifact, i.id_key, i.origin_key, "
    f"coalesce(m.variable, {_SPLIT_VARIABLE}) AS variable, "
    f"coalesce(m.value, {_SPLIT_VALUE}) AS value "
    f"FROM ({{items}}) i LEFT JOIN {ITEMS_VIEW} m ON m.item = i.item "
    # the shard's condition here, not among the items': there it ran out of 128 MB on a
    # month of 830,000 events, here it counts them in 1.1 s
    "WHERE i.item <> '' AND {in_shard}) "
    "GROUP BY d, artifact, variable, value ORDER BY d, artifact, variable, value"
)


# Exports: events per hour (UTC) plan the windows; a window is a time range within the query's.
SORT_KEYS = ("time", "id")
EXPORT_PLAN = (
    f"SELECT epoch_us(date_trunc('hour', {_UTC})) AS hour, count(*) {_SELECTION} "
    "GROUP BY hour ORDER BY hour"
)
IN_WINDOW = "AND e.time >= CAST($low AS TIMESTAMPTZ) AND e.time < CAST($high AS TIMESTAMPTZ)"

# A count of a window's events taking longer than this per event means they are scattered (see
# DuckDBEventStore._scattered): here 30-50 ns an event in time order, 400 ns in random order
# (10M events, windows of 131,072).
WINDOW_COUNT = f"SELECT count(*) {_SELECTION} {IN_WINDOW}"
SCATTERED_SECONDS_PER_ROW = 150e-9

# CSV exports: each window's rows are the sort keys and the line DuckDB wrote (duckdb_csv).
NAMES_VIEW = "eventport_package_names"
_LOGICAL_TYPES: dict[str, ColumnType] = {c.name: c.type for c in COLUMNS}


def _csv_field(column: CsvColumn, escape: bool, table: str = "e") -> Pieces:
    """A CSV column's field, of its value cast to its logical type (a no-op while the stored
    column has it): the package's name for a v1 package column, else the column of the
    events (or of the dimension table) aliased ``table``; texts' formulas escaped with
    ``escape``."""
    if column.package_name:  # the event's package, else its pixel's (package_names)
        return text_field(f"CAST(coalesce(n.name, pn.name) AS {SQL_TYPES['text']})", escape)
    kind = _LOGICAL_TYPES[column.source]
    value = f"CAST({row_value(column.source, table)} AS {SQL_TYPES[kind]})"
    return text_field(value, escape) if kind == "text" else FIELDS[kind](value)


_PLACE_TEXTS = "eventport_place_texts"
_AGENT_TEXTS = "eventport_agent_texts"
_DIMENSION_OF = dict.fromkeys(PLACE_FIELDS, "place") | dict.fromkeys(AGENT_FIELDS, "agent")


class DimensionTexts:
    """A CSV layout's line with each place's and agent's fields written once per export.

    The fields a place (or an agent) gives are written as CSV text once for each place, in
    runs of adjacent columns (one text holds ``lat,lon,country,...``), and each event's line
    takes its place's runs by key: one join and a few pieces per line instead of sixteen
    fields formatted per event (measured on 10M events: the dimension fields cost more than
    half of a line).
    """

    def __init__(self, layout: CsvLayout) -> None:
        self._escape = layout.escape_formulas
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
                fields.append(_csv_field(columns[0], self._escape))
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
                f"{fields_sql(_csv_field(c, self._escape, 'd') for c in columns)} AS t{n}"
                for n, columns in enumerate(self._runs[kind])
            )
            named = f"SELECT e.{key} {_SELECTION}"
            made[name] = cursor.sql(
                f"SELECT {key}, {listed} FROM {table} d WHERE {key} IN ({named})", params=params
            ).to_arrow_table()
        return made


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def names_table(package_names: Mapping[str, str]) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(list(package_names), pa.string()),
            "name": pa.array(list(package_names.values()), pa.string()),
        }
    )


def export_windows(
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


def aggregate_sql(rollup: Rollup, breakdown: str, sharded: bool) -> str:
    period = PERIODS[rollup]
    sql = BreakdownSql.of(breakdown)
    needed = [*BREAKDOWNS[breakdown]]
    in_shard = shard_condition("e", sharded)
    if breakdown in ORGANIZATION_KINDS:
        needed.append("origin_connection_type")
    return (
        f"SELECT {sql.keys}, count(*) AS {_COUNTS[0]}, "
        f"count(DISTINCT origin_key) AS {_COUNTS[1]} "
        f"FROM (SELECT {period} AS d, {_ARTIFACT_NUMBER} AS artifact, e.origin_key{sql.select} "
        f"{selected_from(needed)}{SELECTED_WHERE} AND {sql.counted} AND {in_shard}) "
        f"GROUP BY {sql.keys} ORDER BY {sql.order}"
    )


def utc_text(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError(f"query times must be aware (UTC), not {moment!r}")
    return moment.astimezone(UTC).isoformat()


def sorted_artifacts(query: EventQuery) -> list[str]:
    """The query's artifacts, sorted (by code point: the byte order of their UTF-8, DuckDB's
    order): an artifact's number (``n`` in the selection tables) is its place here, so that
    aggregates group and order by a small integer instead of a 36-character id."""
    pixels = (query.pixel_artifacts.get(pixel, pixel) for pixel in query.pixel_ids)
    return sorted({*query.package_ids, *pixels})


def selection_tables(query: EventQuery) -> dict[str, pa.Table]:
    packages = sorted(set(query.package_ids))
    pixels = sorted(set(query.pixel_ids))
    artifacts = [query.pixel_artifacts.get(pixel, pixel) for pixel in pixels]
    number = {artifact: n for n, artifact in enumerate(sorted_artifacts(query))}
    return {
        PACKAGES_VIEW: pa.table(
            {
                "id": pa.array(packages, pa.string()),
                "n": pa.array([number[package] for package in packages], pa.int32()),
            }
        ),
        PIXELS_VIEW: pa.table(
            {
                "id": pa.array(pixels, pa.string()),
                "artifact": pa.array(artifacts, pa.string()),
                "n": pa.array([number[artifact] for artifact in artifacts], pa.int32()),
            }
        ),
    }


def selection_params(query: EventQuery) -> dict[str, object]:
    return {"owner": query.owner_id, "start": utc_text(query.start), "end": utc_text(query.end)}


def sorted_window(
    cursor: duckdb.DuckDBPyConnection, statement: str, window: dict[str, object]
) -> pa.Array:
    """One window's CSV lines, in order."""
    return sorted_lines(cursor.sql(statement, params=window).to_arrow_table())


def sorted_by_duckdb(
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


def within_memory(items: Iterator[T], limit: str) -> Iterator[T]:
    """``items``, with DuckDB running out of its memory limit told as what it is (a 503 with
    what to do), not as an internal error."""
    try:
        yield from items
    except duckdb.Error as exc:
        if not ran_out_of_memory(exc):
            raise
        raise OutOfMemory(
            f"the event store needs more memory for this request than it may use ({limit}, "
            "EVENTPORT_DUCKDB_MEMORY_MB): ask for a shorter time range, or raise the limit"
        ) from exc


def counted_shard(
    cursor: duckdb.DuckDBPyConnection, statement: str, params: dict[str, object]
) -> pa.Table:
    """One shard of a part of an aggregate (see ``aggregate_sql``): its rows, in order."""
    return cursor.sql(statement, params=params).to_arrow_table()


def added_up(shards: list[pa.Table]) -> pa.Table:
    """The rows of a part counted in shards: each group's counts added up (a distinct origin
    is in one shard only), in the order of ``aggregate_sql``. Added by an in-memory DuckDB
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


def aggregate_rows(
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
