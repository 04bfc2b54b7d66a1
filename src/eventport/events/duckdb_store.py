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
  that owner's own events.)
* A batch arrives as columns, becomes one Arrow table with the schema's types, and is inserted
  with a single ``INSERT … SELECT`` from it; the delete of replaced ids joins the same table.
* ``event_import_checkpoints`` is a tiny keyed table in the same file, written in the same
  transaction as the batch.

One connection, guarded by a lock: DuckDB serializes writers anyway, and one transaction at a
time keeps the ``write_batch`` contract plain.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from eventport.events.schema import COLUMN_NAMES, COLUMNS, Batch, Checkpoint, ColumnType
from eventport.events.store import (
    CHECKPOINT_FIELDS,
    CHECKPOINTS_TABLE,
    EVENTS_TABLE,
    EventStoreError,
    StoreCapabilities,
    micros_to_datetime,
    validate_batch,
)

_SQL_TYPES: dict[ColumnType, str] = {
    "text": "VARCHAR",
    "bigint": "BIGINT",
    "integer": "INTEGER",
    "double": "DOUBLE",
    "boolean": "BOOLEAN",
    "timestamp": "TIMESTAMPTZ",
}
_ARROW_TYPES: dict[ColumnType, pa.DataType] = {
    "text": pa.string(),
    "bigint": pa.int64(),
    "integer": pa.int32(),
    "double": pa.float64(),
    "boolean": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}
_ARROW_SCHEMA = pa.schema(
    [pa.field(c.name, _ARROW_TYPES[c.type], nullable=c.nullable) for c in COLUMNS]
)

_BATCH_VIEW = "eventport_batch"
_IDS_VIEW = "eventport_ids"


def _q(name: str) -> str:
    return f'"{name}"'


def _column_sql(name: str, type_: ColumnType, nullable: bool) -> str:
    return f"{_q(name)} {_SQL_TYPES[type_]}" + ("" if nullable else " NOT NULL")


_COLUMNS_SQL = ", ".join(_q(n) for n in COLUMN_NAMES)
# Must stay the same expression in every statement: it is how stored keys are found again.
_KEY_SQL = "md5_number({owner} || chr(0) || {id})"
# Times leave DuckDB as epoch microseconds: fetching TIMESTAMPTZ as Python objects needs pytz.
_SELECT_COLUMNS = ", ".join(
    f"epoch_us({_q(c.name)})" if c.type == "timestamp" else _q(c.name) for c in COLUMNS
)
_CHECKPOINT_COLUMNS = ", ".join(_q(f) for f in CHECKPOINT_FIELDS)
_UPSERT_CHECKPOINT = (
    f"INSERT INTO {CHECKPOINTS_TABLE} ({_CHECKPOINT_COLUMNS}, updated_at) "
    f"VALUES ({', '.join('?' for _ in CHECKPOINT_FIELDS)}, now()) "
    "ON CONFLICT (import_id) DO UPDATE SET "
    + ", ".join(f"{_q(f)} = excluded.{_q(f)}" for f in CHECKPOINT_FIELDS[1:])
    + ", updated_at = excluded.updated_at"
)


def batch_to_arrow(batch: Batch) -> pa.Table:
    """The batch as an Arrow table with the schema's types (time: µs since epoch, UTC)."""
    length = len(batch["id"])
    arrays = []
    for column in COLUMNS:
        values = batch[column.name]
        arrow_type = _ARROW_TYPES[column.type]
        if column.nullable and values.count(None) == length:  # columns not filled yet
            arrays.append(pa.nulls(length, arrow_type))
        elif column.type == "timestamp":  # ints: no per-value conversion
            arrays.append(pa.array(values, pa.int64()).view(arrow_type))
        else:
            arrays.append(pa.array(values, arrow_type))
    return pa.Table.from_arrays(arrays, schema=_ARROW_SCHEMA)


def _run(
    con: duckdb.DuckDBPyConnection, query: str, params: Sequence[object] | None = None
) -> list[tuple[Any, ...]]:
    """Execute and fetch everything: DuckDB refuses other work on a connection (registering a
    table, say) while a result is still unread, so no statement leaves one behind."""
    return con.execute(query, params).fetchall()


def default_threads() -> int:
    """Threads DuckDB may use: half the cores, at most 4; import workers parse on the others.

    More threads do not speed up inserting a 50,000-row batch (on 2 cores, 2 threads made it
    twice as slow as 1); they speed up scans of large tables.
    """
    return max(1, min(4, (os.cpu_count() or 1) // 2))


class DuckDBEventStore:
    """The event store in one DuckDB file; see the module docstring."""

    capabilities = StoreCapabilities(
        backend="duckdb",
        multi_process=False,
        parallel_writes=False,
        time_partitions=False,
        # Half a DuckDB row group: batches of 122,880 skip the write-ahead log and import ~25%
        # faster (bench/ingest.py), but hold twice the events in memory; this size keeps a 5M-event
        # import under 500 MB.
        preferred_batch_rows=61_440,
        text_allows_nul=True,
    )

    def __init__(
        self,
        path: Path,
        *,
        threads: int | None = None,
        memory_limit: str = "128MB",
        checkpoint_threshold: str = "256MB",
    ) -> None:
        """Open (creating if needed) the file at ``path``.

        ``memory_limit`` caps DuckDB's buffer pool (it spills to ``<file>.tmp`` beyond it).
        ``checkpoint_threshold`` is the write-ahead-log size at which DuckDB folds the log into
        the file: larger means fewer, bigger checkpoints (the default 16MB checkpoints after
        nearly every 50,000-event batch and halves the insert rate); a crash replays the log.
        """
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        config: dict[str, str | bool | int | float | list[str]] = {
            "threads": threads or default_threads(),
            "memory_limit": memory_limit,
            "checkpoint_threshold": checkpoint_threshold,
        }
        try:
            self._con: duckdb.DuckDBPyConnection | None = duckdb.connect(str(path), config=config)
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise EventStoreError(
                    f"the event store {path} is open in another process: the embedded (DuckDB) "
                    "event store belongs to the `eventport serve` process; use its API, stop "
                    f"it first, or use PostgreSQL ({exc})"
                ) from exc
            raise
        self._lock = threading.Lock()

    # -- the interface -------------------------------------------------------------------------

    def setup(self) -> None:
        with self._lock:
            con = self._connection()
            columns = ", ".join(_column_sql(c.name, c.type, c.nullable) for c in COLUMNS)
            _run(
                con,
                f"CREATE TABLE IF NOT EXISTS {EVENTS_TABLE} (id_key UHUGEINT NOT NULL, {columns})",
            )
            existing = {
                row[0]
                for row in _run(
                    con,
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_schema = current_schema() AND table_name = ?",
                    [EVENTS_TABLE],
                )
            }
            for column in COLUMNS:  # columns added to the schema since the file was created
                if column.name not in existing:
                    if not column.nullable:
                        raise EventStoreError(f"cannot add required column {column.name!r}")
                    _run(
                        con,
                        f"ALTER TABLE {EVENTS_TABLE} ADD COLUMN "
                        f"{_column_sql(column.name, column.type, True)}",
                    )
            _run(
                con,
                f"CREATE TABLE IF NOT EXISTS {CHECKPOINTS_TABLE} ("
                "import_id VARCHAR PRIMARY KEY, "
                + ", ".join(f"{_q(f)} BIGINT NOT NULL" for f in CHECKPOINT_FIELDS[1:])
                + ", updated_at TIMESTAMPTZ NOT NULL)",
            )
            have = {
                row[0]
                for row in _run(
                    con,
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_schema = current_schema() AND table_name = ?",
                    [CHECKPOINTS_TABLE],
                )
            }
            for name in CHECKPOINT_FIELDS[1:]:  # counters added since the file was created
                if name not in have:
                    _run(
                        con,
                        f"ALTER TABLE {CHECKPOINTS_TABLE} ADD COLUMN {_q(name)} BIGINT "
                        "NOT NULL DEFAULT 0",
                    )

    def existing_ids(self, owner_id: str, ids: Sequence[str]) -> set[str]:
        if not ids:
            return set()
        table = pa.table({"id": pa.array(ids, pa.string())})
        key = _KEY_SQL.format(owner="?", id="b.id")
        with self._lock:
            con = self._connection()
            con.register(_IDS_VIEW, table)
            try:
                found = _run(
                    con,
                    f"SELECT b.id FROM {_IDS_VIEW} b "
                    f"WHERE {key} IN (SELECT id_key FROM {EVENTS_TABLE})",
                    [owner_id],
                )
            finally:
                con.unregister(_IDS_VIEW)
        return {row[0] for row in found}

    def write_batch(self, owner_id: str, batch: Batch, checkpoint: Checkpoint) -> None:
        length = validate_batch(owner_id, batch)
        table = batch_to_arrow(batch) if length else None  # outside the lock: plain CPU work
        values = [getattr(checkpoint, f) for f in CHECKPOINT_FIELDS]
        with self._lock:
            con = self._connection()
            _run(con, "BEGIN TRANSACTION")
            try:
                if table is not None:
                    con.register(_BATCH_VIEW, table)
                    key = _KEY_SQL.format(owner="?", id="id")
                    _run(
                        con,
                        f"DELETE FROM {EVENTS_TABLE} "
                        f"WHERE id_key IN (SELECT {key} FROM {_BATCH_VIEW})",
                        [owner_id],
                    )
                    _run(
                        con,
                        f"INSERT INTO {EVENTS_TABLE} (id_key, {_COLUMNS_SQL}) SELECT "
                        f"{_KEY_SQL.format(owner='owner_id', id='id')}, {_COLUMNS_SQL} "
                        f"FROM {_BATCH_VIEW}",
                    )
                _run(con, _UPSERT_CHECKPOINT, values)
                self._before_commit()
                _run(con, "COMMIT")
            except BaseException:
                # A failed COMMIT has already ended the transaction; the first error matters.
                with contextlib.suppress(duckdb.Error):
                    _run(con, "ROLLBACK")
                raise
            finally:
                if table is not None:
                    con.unregister(_BATCH_VIEW)

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
            found = _run(self._connection(), f"SELECT count(*) FROM {EVENTS_TABLE}{where}", params)
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
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    # -- internals ----------------------------------------------------------------------------

    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            raise EventStoreError("the event store is closed")
        return self._con

    def _before_commit(self) -> None:
        """Runs inside ``write_batch``'s transaction after every write; tests make it fail."""
