"""``eventport compact``: the embedded store rewritten in time order and whole row groups."""

from __future__ import annotations

import contextlib
from pathlib import Path

import duckdb

from eventport.events.duckdb_layout import (
    AGENTS_TABLE,
    COMPACTED_ROW_GROUP_ROWS,
    PLACES_TABLE,
    ROWS_TABLE,
    attach,
    columns_in_order,
    fetch_all,
    layout_of,
    quoted,
)
from eventport.events.duckdb_store import DuckDBEventStore
from eventport.events.keys import IS_UUID_SQL
from eventport.events.schema import DERIVED_ID_SQL
from eventport.events.store import (
    CHECKPOINTS_TABLE,
    EventStoreError,
)


def leftovers(path: Path) -> tuple[Path, Path]:
    """The files a compaction of the store at ``path`` writes before the new one replaces
    it: the new file and its write-ahead log."""
    fresh = path.with_name(path.name + ".compacting")
    return fresh, fresh.with_name(fresh.name + ".wal")


def remove_leftovers(path: Path) -> list[Path]:
    """Delete what an interrupted compaction of the store at ``path`` left (a copy as large
    as the store); those it found. Only while the store is this process's: a compaction
    running holds it."""
    removed = []
    for leftover in leftovers(path):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()
            removed.append(leftover)
    return removed


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
    fresh_path, _ = leftovers(path)
    remove_leftovers(path)
    old = DuckDBEventStore(path)  # its setup brings an older file's columns up to date
    try:
        old.setup()
        before = _row_groups(old._connection())
    finally:
        old.close()
    try:
        events, after = _compacted_into(path, fresh_path)
    except BaseException:  # the new file is of no use; the old one is as it was
        with contextlib.suppress(OSError):
            remove_leftovers(path)
        raise
    fresh_path.replace(path)
    return events, before, after


def _compacted_into(path: Path, fresh_path: Path) -> tuple[int, int]:
    """:func:`compact_file`'s new file, written: (events, row groups)."""
    fresh = DuckDBEventStore(fresh_path, row_group_rows=COMPACTED_ROW_GROUP_ROWS)
    try:
        fresh.setup()
        con = fresh._connection()
        attach(con, path, _OLD_STORE, "READ_ONLY")
        try:
            _refuse_unknown_layout(con)
            for table in (PLACES_TABLE, AGENTS_TABLE, CHECKPOINTS_TABLE):
                names = ", ".join(quoted(n) for n in columns_in_order(con, table))
                fetch_all(
                    con,
                    f"INSERT INTO {table} ({names}) SELECT {names} FROM {_OLD_STORE}.{table}",
                )
            columns = columns_in_order(con, ROWS_TABLE)
            names = ", ".join(quoted(n) for n in columns)
            values = ", ".join(_COMPACTED.get(n, quoted(n)) for n in columns)
            # One transaction: its rows fill whole row groups across the windows (a commit
            # per window left a small row group after each: 100 instead of 82 for 10M).
            fetch_all(con, "BEGIN TRANSACTION")
            for low, high in _compaction_windows(con, f"{_OLD_STORE}.{ROWS_TABLE}"):
                fetch_all(
                    con,
                    f"INSERT INTO {ROWS_TABLE} ({names}) SELECT {values} "
                    f"FROM {_OLD_STORE}.{ROWS_TABLE} "
                    "WHERE time >= make_timestamptz(CAST($low AS BIGINT)) "
                    "AND time < make_timestamptz(CAST($high AS BIGINT)) "
                    "ORDER BY time, id_key",
                    {"low": low, "high": high},
                )
            fetch_all(con, "COMMIT")
            fetch_all(con, "CHECKPOINT")
            events = int(fetch_all(con, f"SELECT count(*) FROM {ROWS_TABLE}")[0][0])
            after = _row_groups(con)
        finally:  # after a failure the open transaction may refuse; closing detaches anyway
            with contextlib.suppress(duckdb.Error):
                fetch_all(con, f"DETACH {_OLD_STORE}")
    finally:
        fresh.close()
    return events, after


def _refuse_unknown_layout(con: duckdb.DuckDBPyConnection) -> None:
    """Compaction copies the tables and columns this version knows: a store with others (a
    newer eventport's) would lose them, silently. It is refused, saying so."""
    here = str(fetch_all(con, "SELECT current_database()")[0][0])
    unknown = sorted(layout_of(con, _OLD_STORE) - layout_of(con, here))
    if unknown:
        listed = ", ".join(f"{table}.{column}" for table, column in unknown[:5])
        raise EventStoreError(
            f"the event store holds what this version of eventport does not know ({listed}"
            f"{', …' if len(unknown) > 5 else ''}): a newer version wrote it, and compacting "
            "would lose it; compact it with that version. Nothing was changed."
        )


_OLD_STORE = "eventport_old_store"
# Compaction keeps the UUID ids an earlier version stored as text as their numbers, and its
# derived ids not at all (ID_UUID).
_UUID_TEXT = IS_UUID_SQL.format(id="id")
_DERIVED_TEXT = f"id = {DERIVED_ID_SQL.format(import_id='import_id', line='line')}"
_COMPACTED = {
    "id": f"CASE WHEN {_UUID_TEXT} OR {_DERIVED_TEXT} THEN NULL ELSE id END",
    "id_uuid": f"coalesce(id_uuid, CASE WHEN {_UUID_TEXT} THEN CAST(id AS UUID) END)",
}


_COMPACTION_WINDOW_ROWS = 250_000  # a window of the rows sorted at once (fits 128 MB)


def _compaction_windows(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[int, int]]:
    """Consecutive time ranges (epoch microseconds, end exclusive) covering every row, each of
    about _COMPACTION_WINDOW_ROWS rows (a single busier hour is one window): sorting all rows
    in one go ran out of DuckDB's 128 MB buffer on 10M events."""
    hours = fetch_all(
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
    found = fetch_all(
        con,
        f"SELECT count(DISTINCT row_group_id) FROM pragma_storage_info('{ROWS_TABLE}')",
    )
    return int(found[0][0])
