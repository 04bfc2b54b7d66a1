"""The embedded store's DuckDB memory limit: the write limit while only imports write, the full
one while an export or aggregate runs (events/duckdb_pool.py), on real DuckDB files."""

from __future__ import annotations

import random
import string
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from eventport.events.duckdb_layout import ROWS_TABLE
from eventport.events.duckdb_pool import PoolLimit, ran_out_of_memory, set_memory_limit, size_bytes
from eventport.events.duckdb_store import DuckDBEventStore
from eventport.events.store import EventStoreError, open_configured_event_store
from eventport.export.query import EventQuery
from eventport.imports.records import MAX_TEXT_BYTES
from eventport.settings import Settings
from tests.integration.test_duckdb_memory_setting import _shown
from tests.integration.test_event_store import T0, checkpoint, make_batch

QUERY = EventQuery(
    "owner-a",
    datetime(2023, 11, 1, tzinfo=UTC),
    datetime(2023, 12, 1, tzinfo=UTC),
    package_ids=("pkg",),
)


def _setting(store: DuckDBEventStore, name: str = "memory_limit") -> str:
    """A setting of the database (its memory limit) as DuckDB shows it, read on a cursor of
    its own."""
    with store._lock:
        cursor = store._connection().cursor()
    try:
        found = cursor.execute("SELECT current_setting(?)", [name]).fetchone()
    finally:
        cursor.close()
    assert found is not None
    shown: str = found[0]
    return shown


def _write(store: DuckDBEventStore, first: int, count: int = 100, **columns: object) -> None:
    batch = make_batch(
        [f"e{i}" for i in range(first, first + count)],
        first_line=first + 1,
        time=T0 + first,
        package_id="pkg",
        **columns,
    )
    store.write_batch("owner-a", batch, checkpoint(line=first + count + 1))


def test_memory_sizes_read_as_duckdb_reads_them() -> None:
    assert size_bytes("128MB") == 128_000_000
    assert size_bytes(" 64 mib ") == 64 << 20
    assert size_bytes("1GB") == 1_000_000_000
    for wrong in ("", "MB", "12XB", "lots"):
        with pytest.raises(ValueError, match="not a memory size"):
            size_bytes(wrong)
    assert _shown("128MB") != _shown("64MB")  # the checks below tell the limits apart


def test_a_write_limit_at_or_above_the_full_one_is_no_write_limit() -> None:
    assert PoolLimit("128MB", "128MB").writing is None
    assert PoolLimit("64MB", "128MB").writing is None
    assert PoolLimit("128MB", None).writing is None
    assert PoolLimit("128MB", "64MB").writing == "64MB"


def test_a_limit_duckdb_cannot_lower_to_stays_as_it_is() -> None:
    """Lowering can fail (DuckDB cannot evict what queries hold): the write goes on at the
    limit the database has."""
    pool = PoolLimit("128MB", "32MB")

    def refuse(limit: str) -> None:
        raise duckdb.OutOfMemoryException(f"could not lower the limit to {limit}")

    pool.before_write(refuse)
    assert pool.now == "128MB"
    pool.before_write(lambda limit: None)  # the next write lowers it
    assert pool.now == "32MB"


def test_writes_lower_the_limit_and_reads_raise_it_until_they_end(tmp_path: Path) -> None:
    store = DuckDBEventStore(
        tmp_path / "events.duckdb", memory_limit="128MB", write_memory_limit="32MB"
    )
    try:
        store.setup()
        assert _setting(store) == _shown("128MB")  # opened with the full limit
        _write(store, 0)
        assert _setting(store) == _shown("32MB")

        batches = store.export_batches(QUERY, ["id"], batch_rows=10)
        first = next(batches)  # the export is reading: the full limit
        assert _setting(store) == _shown("128MB")
        _write(store, 100)  # a write while the export reads does not lower it
        assert _setting(store) == _shown("128MB")
        exported = first.num_rows + sum(batch.num_rows for batch in batches)
        assert exported == 100  # the export's snapshot: the events before it began
        assert _setting(store) == _shown("128MB")  # lowered again only by the next write
        _write(store, 200)
        assert _setting(store) == _shown("32MB")

        rows = list(store.aggregate(QUERY, "daily", "by-total"))
        assert sum(row.total for row in rows) == 300
        assert _setting(store) == _shown("128MB")
        _write(store, 300)
        assert _setting(store) == _shown("32MB")
        assert store.count(owner_id="owner-a") == 400
    finally:
        store.close()


def test_an_abandoned_read_keeps_the_full_limit_until_it_is_closed(tmp_path: Path) -> None:
    store = DuckDBEventStore(
        tmp_path / "events.duckdb", memory_limit="128MB", write_memory_limit="32MB"
    )
    try:
        store.setup()
        _write(store, 0)
        batches = store.export_batches(QUERY, ["id"], batch_rows=10)
        next(batches)
        _write(store, 100)
        assert _setting(store) == _shown("128MB")
        batches.close()  # the reader is done (a client that went away)
        _write(store, 200)
        assert _setting(store) == _shown("32MB")
    finally:
        store.close()


def _at_write_limit(store: DuckDBEventStore) -> bool:
    # In the write's transaction, under the write lock: the store's own connection.
    found = store._connection().execute("SELECT current_setting('memory_limit')").fetchone()
    return store._pool.writing is not None and found == (_shown(store._pool.writing),)


class _Tight(DuckDBEventStore):
    """A store whose writes run out of memory while the database is at its write limit, as
    DuckDB does when a batch's rows need more than that (DuckDB spills most of what a write
    holds, so no small test batch makes it run out for real): in the inserts, before the rows
    are in."""

    def _delete_replaced(self, con: duckdb.DuckDBPyConnection, *args: Any) -> None:
        if _at_write_limit(self):
            raise duckdb.OutOfMemoryException("Out of Memory Error: could not allocate")
        super()._delete_replaced(con, *args)


class _TightCommit(DuckDBEventStore):
    """A store whose commits run out of memory at the write limit: after the batch's tables
    were let go (see DuckDBEventStore._write_transaction)."""

    def _before_commit(self) -> None:
        if _at_write_limit(self):
            raise duckdb.OutOfMemoryException("Out of Memory Error: could not allocate")


def test_a_write_that_runs_out_of_the_write_limit_gets_the_full_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Written again at the full limit, whole; the store keeps the full limit from then on."""
    store = _Tight(tmp_path / "events.duckdb", memory_limit="512MB", write_memory_limit="16MB")
    try:
        store.setup()
        with caplog.at_level("WARNING", logger="eventport.events.duckdb_pool"):
            _write(store, 0, 1_000)
        assert store.count(owner_id="owner-a") == 1_000  # once: the failed attempt left nothing
        assert store.checkpoint("import-1") == checkpoint(line=1_001)
        assert _setting(store) == _shown("512MB")
        assert "keeps its full limit (512MB)" in caplog.text
        _write(store, 1_000)
        assert _setting(store) == _shown("512MB")  # not lowered again
        assert store.count(owner_id="owner-a") == 1_100
    finally:
        store.close()


def test_a_commit_that_runs_out_of_the_write_limit_fails_and_widens_the_limit(
    tmp_path: Path,
) -> None:
    """The batch's tables were let go when its rows went in, so the write is not made again
    with nothing: it fails, leaving nothing, and the import's next attempt (which resumes from
    the checkpoint) writes at the full limit."""
    store = _TightCommit(
        tmp_path / "events.duckdb", memory_limit="512MB", write_memory_limit="16MB"
    )
    try:
        store.setup()
        with pytest.raises(EventStoreError, match="resumes from its last checkpoint"):
            _write(store, 0, 1_000)
        assert store.count(owner_id="owner-a") == 0
        assert store.checkpoint("import-1") is None
        assert _setting(store) == _shown("512MB")
        _write(store, 0, 1_000)  # the next attempt: whole, at the full limit
        assert store.count(owner_id="owner-a") == 1_000
        assert store.checkpoint("import-1") == checkpoint(line=1_001)
    finally:
        store.close()


def test_a_commit_of_large_texts_that_runs_out_of_the_write_limit_widens_it(
    tmp_path: Path,
) -> None:
    """For real, not made to fail: 45 events of 1 MB of random letters each, at the default
    write limit. DuckDB's commit then cannot pin a block and says so as a TransactionException,
    not an out-of-memory error: the limit was never widened, and every attempt of such an import
    failed the same way until it gave up (a line-reader hunt)."""
    rng = random.Random(7)

    def batch() -> Any:
        made = make_batch([f"e{i}" for i in range(45)], package_id="pkg")
        made["variables"] = [
            "p=" + "".join(rng.choices(string.ascii_letters, k=1_000_000)) for _ in range(45)
        ]
        return made

    store = DuckDBEventStore(
        tmp_path / "events.duckdb", memory_limit="512MB", write_memory_limit="40MB"
    )
    try:
        store.setup()
        with pytest.raises(EventStoreError, match="resumes from its last checkpoint"):
            store.write_batch("owner-a", batch(), checkpoint(line=46))
        assert store.count(owner_id="owner-a") == 0
        assert _setting(store) == _shown("512MB")
        store.write_batch("owner-a", batch(), checkpoint(line=46))  # the import's next attempt
        assert store.count(owner_id="owner-a") == 45
    finally:
        store.close()


def test_a_write_that_runs_out_of_the_full_limit_fails(tmp_path: Path) -> None:
    """Nothing to widen: the error goes to the import (which records the failed attempt)."""

    class Failing(DuckDBEventStore):
        def _delete_replaced(self, con: duckdb.DuckDBPyConnection, *args: Any) -> None:
            raise duckdb.OutOfMemoryException("Out of Memory Error: could not allocate")

    store = Failing(tmp_path / "events.duckdb", memory_limit="128MB", write_memory_limit="32MB")
    try:
        store.setup()
        with pytest.raises(duckdb.OutOfMemoryException):
            _write(store, 0)
        assert store.count(owner_id="owner-a") == 0
        assert store.checkpoint("import-1") is None
    finally:
        store.close()


def test_reads_and_writes_side_by_side_leave_the_limit_as_the_last_says(tmp_path: Path) -> None:
    """Exports on other threads while batches are written: every export sees its snapshot whole,
    and once they are done the next write lowers the limit again."""
    store = DuckDBEventStore(
        tmp_path / "events.duckdb", memory_limit="128MB", write_memory_limit="32MB"
    )
    errors: list[BaseException] = []
    counts: list[int] = []
    try:
        store.setup()
        _write(store, 0, 1_000)

        def export() -> None:
            try:
                for _ in range(5):
                    batches = store.export_batches(QUERY, ["id"], batch_rows=100)
                    counts.append(sum(batch.num_rows for batch in batches))
            except BaseException as exc:
                errors.append(exc)

        readers = [threading.Thread(target=export) for _ in range(3)]
        for reader in readers:
            reader.start()
        for first in range(1_000, 6_000, 1_000):
            _write(store, first, 1_000)
        for reader in readers:
            reader.join()
        assert errors == []
        assert len(counts) == 15
        assert all(count % 1_000 == 0 and 1_000 <= count <= 6_000 for count in counts)
        _write(store, 6_000)
        assert _setting(store) == _shown("32MB")
        assert store.count(owner_id="owner-a") == 6_100
    finally:
        store.close()


def test_the_configured_write_limit_reaches_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EVENTPORT_DATABASE_URL", raising=False)
    monkeypatch.setenv("EVENTPORT_DUCKDB_WRITE_MEMORY_MB", "56")
    store = open_configured_event_store(Settings(data_dir=tmp_path, workers=0))
    try:
        assert isinstance(store, DuckDBEventStore)
        assert _setting(store) == _shown("128MB")
        _write(store, 0)
        assert _setting(store) == _shown("56MB")
    finally:
        store.close()
    with pytest.raises(ValueError, match="duckdb_write_memory_mb"):
        Settings(duckdb_write_memory_mb=8)


def test_set_memory_limit_takes_only_a_size() -> None:
    with duckdb.connect() as con:
        set_memory_limit(con.cursor(), "48MB")
        assert con.execute("SELECT current_setting('memory_limit')").fetchone() == (_shown("48MB"),)
        with pytest.raises(ValueError, match="not a memory size"):
            set_memory_limit(con.cursor(), "1GB'; DROP TABLE x; --")


@pytest.mark.parametrize(
    ("full", "write", "kept"), [(None, None, "80MB"), ("96", "56", "96MB"), ("64", "64", "64MB")]
)
def test_duckdb_keeps_freed_blocks_up_to_twice_the_write_limit(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    full: str | None,
    write: str | None,
    kept: str,
) -> None:
    """Blocks DuckDB frees are reused rather than handed back to the system (a write faulted
    fresh pages in for every batch): twice the write limit (the defaults: 40 and 128 MB), at
    most the full one, whatever the limit of the moment."""
    monkeypatch.delenv("EVENTPORT_DATABASE_URL", raising=False)
    for name, value in (
        ("EVENTPORT_DUCKDB_MEMORY_MB", full),
        ("EVENTPORT_DUCKDB_WRITE_MEMORY_MB", write),
    ):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    store = open_configured_event_store(Settings(data_dir=tmp_path, workers=0))
    try:
        assert isinstance(store, DuckDBEventStore)
        _write(store, 0)
        found = _setting(store, "block_allocator_memory")
    finally:
        store.close()
    assert found == _shown(kept, "block_allocator_memory")
    assert found != _shown("0MB", "block_allocator_memory")  # DuckDB's own default keeps none


@pytest.mark.parametrize(
    ("error", "out_of_memory"),
    [
        (duckdb.OutOfMemoryException("Out of Memory Error: could not allocate"), True),
        # DuckDB 2.0's words for a commit that ran out (a verification hunt found the second
        # in a server: a commit of 45 events of 1 MB of base64 each, never widened)
        (
            duckdb.TransactionException(
                "TransactionContext Error: Failed to commit: failed to pin block of size "
                "980.0 KiB (37.8 MiB/38.1 MiB used)"
            ),
            True,
        ),
        (
            duckdb.TransactionException(
                "TransactionContext Error: Failed to commit: could not allocate block of size "
                "1.0 MiB (37.3 MiB/38.1 MiB used)"
            ),
            True,
        ),
        (duckdb.TransactionException("TransactionContext Error: Conflict on update"), False),
        (duckdb.IOException("IO Error: No space left on device"), False),
    ],
)
def test_what_is_running_out_of_memory(error: duckdb.Error, out_of_memory: bool) -> None:
    assert ran_out_of_memory(error) is out_of_memory


def test_the_store_holds_more_of_the_longest_kept_texts_than_its_memory(tmp_path: Path) -> None:
    """Texts of records.MAX_TEXT_BYTES, more of them than the buffer pool holds, each batch
    with the rows' own: committed, and folded into the file by DuckDB's checkpoints. A
    committed text of more than ~52 KB stays in memory, pinned, until a checkpoint, and with
    ~100 MB of them held every commit failed ("failed to pin block"); so no longer text is
    kept (a resource hunt: events of 1 MB user agents failed their import)."""
    store = DuckDBEventStore(
        tmp_path / "events.duckdb",
        memory_limit="128MB",
        write_memory_limit="40MB",
        checkpoint_threshold="64MB",  # DuckDB's checkpoints after every other batch
    )
    try:
        store.setup()
        per, batches = 1_000, 6  # 192 MB of texts
        widened: list[str] = []
        for b in range(batches):
            first = b * per
            for _ in range(2):  # the write limit widened, the batch is written again
                batch = make_batch([f"e{first + i}" for i in range(per)], first_line=first + 1)
                batch["variables"] = [
                    f"{first + i:08d}" + "v" * (MAX_TEXT_BYTES - 8) for i in range(per)
                ]
                try:
                    store.write_batch("owner-a", batch, checkpoint(line=first + per + 1))
                    break
                except EventStoreError as exc:  # as an import's next attempt does
                    widened.append(str(exc))
        assert len(widened) <= 1
        assert all("ran out of memory in its commit" in text for text in widened)
        assert store.count(owner_id="owner-a") == per * batches
    finally:
        store.close()
    with duckdb.connect(str(tmp_path / "events.duckdb"), read_only=True) as con:
        ((longest, total),) = con.execute(
            f"SELECT max(strlen(variables)), count(*) FROM {ROWS_TABLE} "
            "WHERE strlen(variables) = ?",
            [MAX_TEXT_BYTES],
        ).fetchall()
    assert (longest, total) == (MAX_TEXT_BYTES, per * batches)
