"""The event store in PostgreSQL (psycopg 3), for deployments that outgrow the embedded one.

Layout:

* ``events``: the columns of :data:`~eventport.events.schema.COLUMNS`, range-partitioned by
  ``time`` into monthly partitions ``events_pYYYYMM``, created on demand for the months a batch
  touches (in a short transaction of their own, under an advisory lock, before the batch's
  transaction), plus ``events_default`` for safety (the store only accepts years 1-9999 and makes
  a partition for every month it meets, so nothing should land there). Creating a partition
  briefly takes an exclusive lock on ``events``; it waits for running queries on the table.
* An index on ``(owner_id, id)``, inherited by every partition, answers "which of these ids
  exist" (``= ANY(array)``) and the delete of replaced ids. It cannot be unique: a unique index
  on a partitioned table must include the partition key. Uniqueness per owner comes from
  ``write_batch`` deleting before inserting, under a per-owner advisory lock (batches of
  different owners are written in parallel; one owner's take turns).
* ``event_import_checkpoints``: one row per import, upserted in the batch's transaction.

The names stay clear of the control store's tables, so both can share one database.

Batches are written with binary ``COPY``. Connections come from a small built-in pool (idle
connections kept for reuse); each call holds one for its duration, so threads write in parallel.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any

import psycopg
from psycopg import sql

from eventport.events.schema import COLUMN_NAMES, COLUMNS, Batch, Checkpoint, ColumnType
from eventport.events.store import (
    CHECKPOINT_FIELDS,
    CHECKPOINTS_TABLE,
    EVENTS_TABLE,
    EventStoreError,
    StoreCapabilities,
    validate_batch,
)

_SQL_TYPES: dict[ColumnType, str] = {
    "text": 'text COLLATE "C"',  # byte order: cheaper comparisons, the same order as DuckDB
    "bigint": "int8",
    "integer": "int4",
    "double": "float8",
    "boolean": "bool",
    "timestamp": "timestamptz",
}
_COPY_TYPES = [_SQL_TYPES[c.type].split()[0] for c in COLUMNS]
_DEFAULT_PARTITION = f"{EVENTS_TABLE}_default"
_INDEX = f"{EVENTS_TABLE}_owner_id_id_idx"
# pg_advisory_xact_lock keys: schema changes, partition creation ("evstore" / "evparts"), and
# the class of the per-owner write locks ("evow"; two-int4 keys, a separate key space).
_SETUP_LOCK = 0x65767374_6F7265
_PARTITION_LOCK = 0x65767061_727473
_OWNER_LOCK = 0x65766F77

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_by_id = itemgetter(COLUMN_NAMES.index("id"))

_T = sql.Identifier(EVENTS_TABLE)
_C = sql.Identifier(CHECKPOINTS_TABLE)
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


_PARTITION_NAME = re.compile(rf"{EVENTS_TABLE}_p(\d{{4}})(\d{{2}})")


def partition_name(year: int, month: int) -> str:
    return f"{EVENTS_TABLE}_p{year:04d}{month:02d}"


def _month_bounds(year: int, month: int) -> tuple[str, str]:
    end = (year + 1, 1) if month == 12 else (year, month + 1)
    return f"{year:04d}-{month:02d}-01 00:00:00+00", f"{end[0]:04d}-{end[1]:02d}-01 00:00:00+00"


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
        with self._lock:
            if self._closed:
                raise EventStoreError("the event store is closed")
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = psycopg.connect(
                self._conninfo,
                autocommit=True,
                application_name="eventport events",
                options="-c TimeZone=UTC",
            )
        healthy = False
        try:
            yield conn
            healthy = True
        finally:
            idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            keep = healthy and idle and not conn.closed
            with self._lock:
                keep = keep and not self._closed and len(self._idle) < self._max_idle
                if keep:
                    self._idle.append(conn)
            if not keep:
                conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class PostgresEventStore:
    """The event store in a PostgreSQL database; see the module docstring."""

    capabilities = StoreCapabilities(
        backend="postgresql",
        multi_process=True,
        parallel_writes=True,
        time_partitions=True,
        preferred_batch_rows=50_000,
        text_allows_nul=False,
    )

    def __init__(self, conninfo: str, *, max_idle_connections: int = 4) -> None:
        """``conninfo``: a libpq URL (``postgresql://…``) or key=value string."""
        self._pool = _Connections(conninfo, max_idle_connections)
        self._partitions: set[tuple[int, int]] = set()
        self._partitions_lock = threading.Lock()

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
            conn.execute(
                sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (owner_id, id)").format(
                    sql.Identifier(_INDEX), _T
                )
            )
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

    def existing_ids(self, owner_id: str, ids: Sequence[str]) -> set[str]:
        if not ids:
            return set()
        with self._pool.connection() as conn:
            found = conn.execute(
                sql.SQL("SELECT id FROM {} WHERE owner_id = %s AND id = ANY(%b)").format(_T),
                (owner_id, list(ids)),
            ).fetchall()
        return {row[0] for row in found}

    def write_batch(self, owner_id: str, batch: Batch, checkpoint: Checkpoint) -> None:
        length = validate_batch(owner_id, batch)
        values = [getattr(checkpoint, f) for f in CHECKPOINT_FIELDS]
        columns: list[list[Any]] = []
        if length:
            epoch, micro = _EPOCH, timedelta(microseconds=1)
            times = [epoch + t * micro for t in batch["time"]]
            self._ensure_partitions({(t.year, t.month) for t in times})
            columns = [times if name == "time" else batch[name] for name in COLUMN_NAMES]
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            # One owner's batches take turns: with no unique index, two concurrent batches
            # reusing an id could otherwise both delete nothing and both insert it.
            cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_OWNER_LOCK, owner_id))
            if length:
                cur.execute(
                    sql.SQL("DELETE FROM {} WHERE owner_id = %s AND id = ANY(%b)").format(_T),
                    (owner_id, batch["id"]),
                )
                statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
                    _T, _COLUMNS_SQL
                )
                # In id order, index inserts walk each partition's index once, page by page.
                rows = sorted(zip(*columns, strict=True), key=_by_id)
                with cur.copy(statement) as copy:
                    copy.set_types(_COPY_TYPES)
                    for row in rows:
                        copy.write_row(row)
            cur.execute(_UPSERT_CHECKPOINT, values)
            self._before_commit()

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
        are empty), and the batch's transaction does not hold the parent's exclusive lock.
        """
        with self._partitions_lock:
            missing = sorted(months - self._partitions)
        if not missing:
            return
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PARTITION_LOCK,))
            for year, month in missing:
                start, end = _month_bounds(year, month)
                conn.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})"
                    ).format(
                        sql.Identifier(partition_name(year, month)),
                        _T,
                        sql.Literal(start),
                        sql.Literal(end),
                    )
                )
        with self._partitions_lock:
            self._partitions.update(missing)

    def _before_commit(self) -> None:
        """Runs inside ``write_batch``'s transaction after every write; tests make it fail."""
