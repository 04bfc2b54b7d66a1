"""The event store: the same tests on DuckDB (the ``sqlite`` backend) and on PostgreSQL.

The ``backend`` parameter names the control-store backend; the event store follows it the way
the server does: embedded DuckDB beside SQLite, PostgreSQL beside PostgreSQL. Backend-specific
behaviour is selected through the store's capability flags, never by asking for the backend.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import psycopg
import pyarrow as pa
import pytest

from eventport.events.postgres_store import _OWNER_LOCK, EVENT_IDS_TABLE, PostgresEventStore
from eventport.events.schema import COLUMN_NAMES, COLUMNS, Batch, Checkpoint, empty_batch
from eventport.events.store import (
    CHECKPOINTS_TABLE,
    EVENTS_TABLE,
    EventStore,
    EventStoreError,
    StagedWrites,
    WriteInterrupted,
    existing_ids,
    libpq_url,
    open_event_store,
)
from tests.unit.test_keys import NOT_UUIDS, UUIDS

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
T0 = 1_700_000_000_123_456  # 2023-11-14T22:13:20.123456Z


def micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


@dataclass
class Opener:
    """Opens event stores on the test's backend; closes them all after the test."""

    url: str | None
    data_dir: Path
    opened: list[EventStore] = field(default_factory=list)

    def __call__(self) -> EventStore:
        store = open_event_store(self.url, self.data_dir)
        self.opened.append(store)
        return store


def _drop_event_tables(url: str) -> None:
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute(
            f"DROP TABLE IF EXISTS {EVENTS_TABLE}, {CHECKPOINTS_TABLE}, {EVENT_IDS_TABLE} CASCADE"
        )


@pytest.fixture
def open_store(store_database: str | None, tmp_path: Path) -> Iterator[Opener]:
    url = store_database
    if url is not None:  # start from no event tables
        _drop_event_tables(url)
    opener = Opener(url, tmp_path / "data")
    yield opener
    for store in opener.opened:
        store.close()
    if url is not None:  # and leave none behind (the migration tests compare the schema)
        _drop_event_tables(url)


@pytest.fixture
def event_store(open_store: Opener) -> EventStore:
    """An empty, set-up event store on the test's backend."""
    return open_store()


def make_batch(
    ids: list[str],
    *,
    owner: str = "owner-a",
    import_id: str = "import-1",
    first_line: int = 1,
    time: int = T0,
    **columns: Any,
) -> Batch:
    """A batch of one event per id; ``columns`` gives one value for every row of a column."""
    batch = empty_batch()
    for offset, event_id in enumerate(ids):
        values: dict[str, Any] = dict.fromkeys(COLUMN_NAMES)
        values.update(
            id=event_id,
            owner_id=owner,
            import_id=import_id,
            line=first_line + offset,
            time=time + offset,
            type="download",
        )
        values.update(columns)
        for name in COLUMN_NAMES:
            batch[name].append(values[name])
    return batch


def checkpoint(import_id: str = "import-1", line: int = 1, **fields: int) -> Checkpoint:
    values = {"offset": line * 100, "source_offset": line * 40, "events_total": line - 1}
    values |= {"imported": line - 1, "failed": 0, "warnings": 0} | fields
    return Checkpoint(import_id=import_id, line=line, **values)


def expected_rows(batch: Batch) -> list[dict[str, Any]]:
    rows = []
    for i in range(len(batch["id"])):
        row = {name: batch[name][i] for name in COLUMN_NAMES}
        row["time"] = EPOCH + timedelta(microseconds=row["time"])
        rows.append(row)
    return sorted(rows, key=lambda r: (r["import_id"], r["line"], r["id"]))


def snapshot(store: EventStore, *owners: str) -> tuple[list[list[dict[str, Any]]], int]:
    return [store.rows(owner) for owner in owners], store.count()


# -- round trips ----------------------------------------------------------------------------------

FULL_VALUES: dict[str, Any] = {
    "text": 'Zürich ✓ 東京 🚀 "quoted", comma; back\\slash\ttab\nnewline',
    "bigint": 2**53 + 1,
    "integer": -(2**31),
    "double": -33.868820123456789,
    "boolean": True,
}


def test_every_column_round_trips_including_none_and_unicode(event_store: EventStore) -> None:
    full: dict[str, Any] = {}
    for column in COLUMNS:
        if column.name not in ("id", "owner_id", "import_id", "line", "time"):
            value = FULL_VALUES[column.type]
            full[column.name] = f"{column.name}: {value}" if column.type == "text" else value
    batch = make_batch(["évènement-1"], **full)
    empties = make_batch(["", "ascii-2"], first_line=2, type=None)  # every nullable column None
    odd = make_batch(["☃-3"], first_line=4, dnt=False, excluded=False, referer="", confidence=0.0)
    for name in COLUMN_NAMES:
        batch[name] += empties[name] + odd[name]
    event_store.write_batch("owner-a", batch, checkpoint(line=5))

    rows = event_store.rows("owner-a")
    assert rows == expected_rows(batch)
    assert rows[0]["headers"] == full["headers"]
    assert (rows[1]["id"], rows[1]["type"], rows[1]["dnt"]) == ("", None, None)
    assert (rows[3]["dnt"], rows[3]["referer"], rows[3]["confidence"]) == (False, "", 0.0)
    assert [type(v) for v in rows[0].values()] == [
        type(v) for v in expected_rows(batch)[0].values()
    ]


def test_time_keeps_microseconds_and_is_utc_even_far_from_now(event_store: EventStore) -> None:
    moments = [
        EPOCH,
        EPOCH + timedelta(microseconds=1),
        EPOCH - timedelta(microseconds=1),
        datetime(2024, 2, 29, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(2024, 3, 1, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(1901, 6, 15, 12, 0, 0, 1, tzinfo=UTC),
        datetime(2150, 3, 3, 3, 3, 3, 3, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    ]
    batch = make_batch([f"e{i}" for i in range(len(moments))])
    batch["time"] = [micros(m) for m in moments]
    event_store.write_batch("owner-a", batch, checkpoint())

    times = [row["time"] for row in event_store.rows("owner-a")]
    assert times == moments
    assert all(t.utcoffset() == timedelta(0) for t in times)


# -- replacement by id ----------------------------------------------------------------------------


def test_reused_id_replaces_the_event_of_the_same_owner_only(event_store: EventStore) -> None:
    other = make_batch(["shared"], owner="owner-b", import_id="import-b", version="b")
    event_store.write_batch("owner-b", other, checkpoint("import-b"))
    first = make_batch(["shared", "kept"], import_id="import-1", version="1")
    event_store.write_batch("owner-a", first, checkpoint("import-1"))
    again = make_batch(["shared"], import_id="import-2", first_line=7, version="2")
    event_store.write_batch("owner-a", again, checkpoint("import-2"))

    rows = {row["id"]: row for row in event_store.rows("owner-a")}
    assert sorted(rows) == ["kept", "shared"]
    assert (rows["shared"]["import_id"], rows["shared"]["line"]) == ("import-2", 7)
    assert (rows["shared"]["version"], rows["kept"]["version"]) == ("2", "1")
    assert event_store.rows("owner-b") == expected_rows(other)
    assert event_store.count() == 3


def test_existing_ids(event_store: EventStore) -> None:
    assert existing_ids(event_store, "owner-a", ["a", "b"]) == set()
    ids = [f"id-{i:05d}" for i in range(20_000)]
    event_store.write_batch("owner-a", make_batch(ids), checkpoint())
    event_store.write_batch(
        "owner-b", make_batch(["only-b"], owner="owner-b", import_id="b"), checkpoint("b")
    )

    asked = [*ids[::2], "nope", "only-b", "ID-00000"]
    assert existing_ids(event_store, "owner-a", asked) == set(ids[::2])
    assert existing_ids(event_store, "owner-b", ["only-b", "id-00000"]) == {"only-b"}
    assert existing_ids(event_store, "owner-c", ids[:10]) == set()
    assert existing_ids(event_store, "owner-a", []) == set()
    # the import's form of the same answer: Arrow texts, each found id once
    found = event_store.stored_ids("owner-a", pa.array(asked))
    assert found.type == pa.string()
    assert sorted(found.to_pylist()) == sorted(ids[::2])
    assert event_store.stored_ids("owner-c", pa.array(ids[:10])).to_pylist() == []
    assert event_store.stored_ids("owner-a", pa.array([], pa.string())).to_pylist() == []


def test_the_events_of_deleted_packages_and_pixels_go_and_free_their_ids(
    event_store: EventStore,
) -> None:
    uuid_id = "0b0e6a55-2e7c-4f5e-8d8e-3f1d3c2b1a00"
    for import_id, ids, target in [
        ("i-p1", ["a", "b", uuid_id], {"package_id": "p1"}),
        ("i-p2", ["c"], {"package_id": "p2"}),
        ("i-x1", ["d", "e"], {"pixel_id": "x1"}),
        ("i-x2", ["f"], {"pixel_id": "x2", "package_id": "p2"}),  # a pixel attached to p2
    ]:
        batch = make_batch(ids, import_id=import_id, **target)
        event_store.write_batch("owner-a", batch, checkpoint(import_id))
    other = make_batch(["a"], owner="owner-b", import_id="i-b", package_id="p1")
    event_store.write_batch("owner-b", other, checkpoint("i-b"))

    assert event_store.delete_events("owner-a") == 0  # nothing named: nothing deleted
    assert event_store.delete_events("owner-a", package_ids=["p1"], pixel_ids=["x1"]) == 5
    assert sorted(r["id"] for r in event_store.rows("owner-a")) == ["c", "f"]
    assert event_store.rows("owner-b") == expected_rows(other)  # another owner's are theirs
    assert existing_ids(event_store, "owner-a", ["a", "b", "d", uuid_id]) == set()
    # Their ids are free: written again, they are new events, not replacements.
    event_store.write_batch(
        "owner-a", make_batch(["a", uuid_id], import_id="i-3"), checkpoint("i-3")
    )
    assert sorted(r["id"] for r in event_store.rows("owner-a")) == sorted(["a", "c", "f", uuid_id])
    assert event_store.delete_events("owner-a", package_ids=["p2"]) == 2  # c, and f by package
    assert event_store.delete_events("owner-a", pixel_ids=["x9"], package_ids=["p9"]) == 0
    assert event_store.count() == 3


def test_ids_of_every_form_round_trip_and_replace(event_store: EventStore) -> None:
    """UUIDs (which the embedded store keeps as numbers when canonical) and other texts."""
    batch = make_batch([*UUIDS, *NOT_UUIDS])
    event_store.write_batch("owner-a", batch, checkpoint(line=len(batch["id"]) + 1))
    assert event_store.rows("owner-a") == expected_rows(batch)
    assert existing_ids(event_store, "owner-a", [*UUIDS, "x"]) == set(UUIDS)
    again = make_batch([UUIDS[-1], NOT_UUIDS[0]], import_id="import-2", version="2")
    event_store.write_batch("owner-a", again, checkpoint("import-2", line=3))
    rows = sorted(event_store.rows("owner-a"), key=lambda row: row["id"])
    assert [row["id"] for row in rows] == sorted([*UUIDS, *NOT_UUIDS])
    assert sorted(row["id"] for row in rows if row["version"] == "2") == sorted(again["id"])


# -- atomicity ------------------------------------------------------------------------------------


def test_a_failure_inside_the_transaction_leaves_nothing_behind(
    event_store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    event_store.write_batch("owner-a", make_batch(["a", "b"], version="1"), checkpoint(line=3))
    before = snapshot(event_store, "owner-a")

    def fail() -> None:
        raise RuntimeError("disk on fire")

    # The hook runs after the delete, the insert and the checkpoint upsert, before COMMIT.
    monkeypatch.setattr(event_store, "_before_commit", fail)
    replacing = make_batch(["b", "c", "d"], first_line=3, version="2")
    with pytest.raises(RuntimeError, match="disk on fire"):
        event_store.write_batch("owner-a", replacing, checkpoint(line=6))
    assert snapshot(event_store, "owner-a") == before
    assert event_store.checkpoint("import-1") == checkpoint(line=3)
    assert existing_ids(event_store, "owner-a", ["b", "c", "d"]) == {"b"}

    monkeypatch.undo()  # the store is still usable, and the retry lands
    event_store.write_batch("owner-a", replacing, checkpoint(line=6))
    assert [r["version"] for r in event_store.rows("owner-a")] == ["1", "2", "2", "2"]
    assert event_store.checkpoint("import-1") == checkpoint(line=6)


def test_a_prepared_batch_is_written_once_by_its_own_store_for_its_own_owner(
    event_store: EventStore, open_store: Opener
) -> None:
    """What prepare_batch makes is what write_batch writes; written for another owner, by
    another store or twice, it is refused, and nothing of it is written."""
    batch = make_batch(["a", "b"], version="1")
    prepared = event_store.prepare_batch("owner-a", batch)
    with pytest.raises(ValueError, match="prepared for owner 'owner-a'"):
        event_store.write_batch("owner-b", prepared, checkpoint(line=3))
    other = open_store()
    with pytest.raises(ValueError, match="another event store"):
        other.write_batch("owner-a", prepared, checkpoint(line=3))
    assert event_store.count(owner_id="owner-a") == 0
    event_store.write_batch("owner-a", prepared, checkpoint(line=3))
    assert event_store.rows("owner-a") == expected_rows(batch)
    with pytest.raises(RuntimeError, match="written already"):
        event_store.write_batch("owner-a", prepared, checkpoint(line=3))
    with pytest.raises(ValueError, match="owner"):  # checked when prepared
        event_store.prepare_batch("owner-b", make_batch(["c"]))
    empty = event_store.prepare_batch("owner-a", make_batch([]))
    event_store.write_batch("owner-a", empty, checkpoint(line=4))
    assert event_store.checkpoint("import-1") == checkpoint(line=4)
    assert event_store.count(owner_id="owner-a") == 2


def _uneven(batch: Batch) -> None:
    batch["user_agent"].pop()


def _missing(batch: Batch) -> None:
    del batch["headers"]


def _unknown(batch: Batch) -> None:
    batch["ip"] = ["192.0.2.1"] * len(batch["id"])


def _null_required(batch: Batch) -> None:
    batch["line"][1] = None


def _foreign_owner(batch: Batch) -> None:
    batch["owner_id"][0] = "owner-b"


def _time_out_of_range(batch: Batch) -> None:
    batch["time"][0] = micros(datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)) + 1


@pytest.mark.parametrize(
    "spoil", [_uneven, _missing, _unknown, _null_required, _foreign_owner, _time_out_of_range]
)
def test_a_malformed_batch_is_refused_whole(event_store: EventStore, spoil: Any) -> None:
    event_store.write_batch("owner-a", make_batch(["a", "b"]), checkpoint(line=3))
    before = snapshot(event_store, "owner-a", "owner-b")
    batch = make_batch(["b", "c"], first_line=3, version="2")
    spoil(batch)
    with pytest.raises(ValueError, match="batch"):
        event_store.write_batch("owner-a", batch, checkpoint(line=5))
    assert snapshot(event_store, "owner-a", "owner-b") == before
    assert event_store.checkpoint("import-1") == checkpoint(line=3)


def test_nul_in_text_round_trips_or_fails_the_whole_batch(event_store: EventStore) -> None:
    event_store.write_batch("owner-a", make_batch(["a"], version="1"), checkpoint(line=2))
    before = snapshot(event_store, "owner-a")
    batch = make_batch(["a", "b"], version="2", user_agent="curl\x00/8")
    if event_store.capabilities.text_allows_nul:
        event_store.write_batch("owner-a", batch, checkpoint(line=4))
        assert [r["user_agent"] for r in event_store.rows("owner-a")] == ["curl\x00/8"] * 2
    else:  # the server refuses it mid-COPY, after the delete of "a": all of it must roll back
        with pytest.raises(psycopg.Error):
            event_store.write_batch("owner-a", batch, checkpoint(line=4))
        assert snapshot(event_store, "owner-a") == before
        assert event_store.checkpoint("import-1") == checkpoint(line=2)


# -- checkpoints and counts -----------------------------------------------------------------------


def test_checkpoint_upsert_and_read(event_store: EventStore) -> None:
    assert event_store.checkpoint("import-1") is None
    first = checkpoint(line=1, offset=0, source_offset=0)
    event_store.write_batch("owner-a", empty_batch(), first)  # an empty batch still checkpoints
    assert event_store.checkpoint("import-1") == first
    assert event_store.count() == 0

    later = Checkpoint("import-1", 50_001, 2**40, 2**33, 50_000, 49_990, 10, 3)
    event_store.write_batch("owner-a", make_batch(["x"]), later)
    other = replace(later, import_id="import-2", line=2)
    event_store.write_batch("owner-a", make_batch(["y"], import_id="import-2"), other)
    assert event_store.checkpoint("import-1") == later
    assert event_store.checkpoint("import-2") == other
    assert event_store.checkpoint("import-3") is None


def test_counts_by_owner_and_import(event_store: EventStore) -> None:
    event_store.write_batch(
        "a", make_batch(["1", "2", "3"], owner="a", import_id="i1"), checkpoint("i1")
    )
    event_store.write_batch(
        "a", make_batch(["4", "5"], owner="a", import_id="i2"), checkpoint("i2")
    )
    event_store.write_batch("b", make_batch(["1"], owner="b", import_id="i3"), checkpoint("i3"))

    assert event_store.count() == 6
    assert event_store.count(owner_id="a") == 5
    assert event_store.count(owner_id="b") == 1
    assert event_store.count(owner_id="c") == 0
    assert event_store.count(import_id="i2") == 2
    assert event_store.count(owner_id="a", import_id="i1") == 3
    assert event_store.count(owner_id="b", import_id="i1") == 0


# -- life cycle -----------------------------------------------------------------------------------


def test_setup_twice_is_harmless(event_store: EventStore) -> None:
    event_store.write_batch("owner-a", make_batch(["a", "b"]), checkpoint(line=3))
    event_store.setup()
    event_store.setup()
    assert event_store.count() == 2
    assert event_store.checkpoint("import-1") == checkpoint(line=3)
    event_store.write_batch("owner-a", make_batch(["b", "c"], first_line=3), checkpoint(line=5))
    assert [r["id"] for r in event_store.rows("owner-a")] == ["a", "b", "c"]


def test_reopening_keeps_events_and_checkpoints(open_store: Opener) -> None:
    store = open_store()
    batch = make_batch([f"e{i}" for i in range(1000)], referer="https://example.com/ü")
    store.write_batch("owner-a", batch, checkpoint(line=1001))
    store.close()
    with pytest.raises(EventStoreError, match="closed"):
        store.count()

    reopened = open_store()
    assert reopened.rows("owner-a") == expected_rows(batch)
    assert reopened.checkpoint("import-1") == checkpoint(line=1001)
    assert existing_ids(reopened, "owner-a", ["e0", "e999", "e1000"]) == {"e0", "e999"}


def test_threads_write_at_once(event_store: EventStore) -> None:
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for b in range(5):
                ids = [f"t{n}-b{b}-{i}" for i in range(200)]
                batch = make_batch(ids, import_id=f"imp-{n}", first_line=b * 200 + 1)
                event_store.write_batch("owner-a", batch, checkpoint(f"imp-{n}", (b + 1) * 200 + 1))
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert event_store.count(owner_id="owner-a") == 4 * 5 * 200
    assert [
        event_store.checkpoint(f"imp-{n}") == checkpoint(f"imp-{n}", 1001) for n in range(4)
    ] == [True] * 4


# -- staged writes (a store whose capabilities say so) ---------------------------------------------


def staged_store(event_store: EventStore) -> StagedWrites:
    if not event_store.capabilities.staged_writes:
        pytest.skip("this backend writes a batch in one step")
    return cast(StagedWrites, event_store)


def test_a_staged_batch_replaces_what_is_committed_before_its_commit(
    event_store: EventStore,
) -> None:
    """An import stages batch N+1 while batch N commits: N+1's rows are sent before N's are
    committed, yet the ids N+1 reuses replace N's events (and earlier ones), and its own rows
    stay. Nothing staged is visible before its commit."""
    stages = staged_store(event_store)
    event_store.write_batch("owner-a", make_batch(["old", "kept"], version="0"), checkpoint(line=3))
    first = make_batch(["a", "b"], first_line=3, version="1")
    second = make_batch(["b", "old", "c"], first_line=5, version="2")
    staged_first = stages.stage_batch("owner-a", first)
    staged_second = stages.stage_batch("owner-a", second)  # sent before the first commits
    assert event_store.count() == 2  # neither visible yet
    assert existing_ids(event_store, "owner-a", ["a", "b", "c"]) == set()

    stages.commit_staged(staged_first, checkpoint(line=5))
    assert event_store.count() == 4
    stages.commit_staged(staged_second, checkpoint(line=8))

    rows = {row["id"]: (row["version"], row["line"]) for row in event_store.rows("owner-a")}
    assert rows == {"kept": ("0", 2), "a": ("1", 3), "b": ("2", 5), "old": ("2", 6), "c": ("2", 7)}
    assert event_store.count() == 5
    assert event_store.checkpoint("import-1") == checkpoint(line=8)


def test_an_interrupted_commit_keeps_nothing_and_its_connection_is_not_reused(
    event_store: EventStore, open_store: Opener
) -> None:
    """An aborted import cancels its batch in flight (interrupt_writes) rather than waiting
    for it: the commit raises WriteInterrupted, nothing of the batch or its checkpoint stays,
    and the store writes on as before. The commit is held on the owner's lock by another
    session, so the cancel finds it running."""
    stages = staged_store(event_store)
    staged = stages.stage_batch("owner-a", make_batch(["a", "b"]))
    raised: list[BaseException] = []

    def commit() -> None:
        try:
            stages.commit_staged(staged, checkpoint(line=3))
        except BaseException as exc:
            raised.append(exc)

    url = libpq_url(cast(str, open_store.url))
    with psycopg.connect(url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (_OWNER_LOCK, "owner-a"))
        thread = threading.Thread(target=commit)
        thread.start()
        waiting = (
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE '%pg_advisory_xact_lock%' AND pid <> pg_backend_pid()"
        )
        deadline = time.monotonic() + 10
        while holder.execute(waiting).fetchone() != (1,):
            assert time.monotonic() < deadline, "the commit never waited for the lock"
            time.sleep(0.02)
        stages.interrupt_writes("owner-a")
        thread.join(10)
        holder.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (_OWNER_LOCK, "owner-a"))
    assert not thread.is_alive()
    assert [type(exc) for exc in raised] == [WriteInterrupted]
    assert (event_store.count(), event_store.checkpoint("import-1")) == (0, None)
    event_store.write_batch("owner-a", make_batch(["c"]), checkpoint(line=2))
    assert [row["id"] for row in event_store.rows("owner-a")] == ["c"]


def test_a_frozen_writers_transaction_is_ended_and_its_lock_let_go(
    event_store: EventStore, open_store: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker frozen in a batch's commit (stopped, swapping, its host cut off) held the
    owner's lock as long as it stayed frozen: the worker that took its import over waited on
    that lock forever. PostgreSQL now ends a write transaction idle past WRITE_IDLE_SECONDS."""
    from eventport.events import postgres_store

    stages = staged_store(event_store)
    monkeypatch.setattr(postgres_store, "WRITE_IDLE_SECONDS", 1)
    staged = stages.stage_batch("owner-a", make_batch(["a", "b"]))
    frozen = threading.Event()
    raised: list[BaseException] = []

    def freeze() -> None:  # after the lock is taken, before the commit
        frozen.set()
        time.sleep(4)

    monkeypatch.setattr(event_store, "_before_commit", freeze)

    def commit() -> None:
        try:
            stages.commit_staged(staged, checkpoint(line=3))
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=commit)
    thread.start()
    assert frozen.wait(10)
    url = libpq_url(cast(str, open_store.url))
    with psycopg.connect(url, autocommit=True) as other:
        began = time.monotonic()
        other.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (_OWNER_LOCK, "owner-a"))
        waited = time.monotonic() - began
        other.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (_OWNER_LOCK, "owner-a"))
    assert waited < 3.5, waited  # let go after ~1 s idle, not when the freeze ended (4 s)
    thread.join(10)
    monkeypatch.undo()  # no more freezing
    assert len(raised) == 1, raised
    assert (event_store.count(), event_store.checkpoint("import-1")) == (0, None)
    event_store.write_batch("owner-a", make_batch(["c"]), checkpoint(line=2))
    assert [row["id"] for row in event_store.rows("owner-a")] == ["c"]


def test_a_staged_batch_may_wait_idle_past_the_write_idle_limit(
    event_store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A staged batch waits idle, by design, while the batch before it commits: the idle
    limit (set at staging, at first) cost a healthy import an attempt when that took long."""
    from eventport.events import postgres_store

    stages = staged_store(event_store)
    monkeypatch.setattr(postgres_store, "WRITE_IDLE_SECONDS", 1)
    staged = stages.stage_batch("owner-a", make_batch(["a", "b"]))
    time.sleep(1.5)  # the batch before it committing
    stages.commit_staged(staged, checkpoint(line=3))
    assert [row["id"] for row in event_store.rows("owner-a")] == ["a", "b"]


def test_the_same_batch_written_again_replaces_itself(event_store: EventStore) -> None:
    """The rows a staged batch's transaction wrote are kept, not those of the same import and
    lines committed before (a store written twice with the same batch holds it once)."""
    batch = make_batch(["x", "y"], version="1")
    event_store.write_batch("owner-a", batch, checkpoint(line=3))
    event_store.write_batch("owner-a", make_batch(["x", "y"], version="2"), checkpoint(line=3))
    assert [(r["id"], r["version"]) for r in event_store.rows("owner-a")] == [
        ("x", "2"),
        ("y", "2"),
    ]


def test_a_discarded_or_failed_staged_batch_leaves_nothing(
    event_store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    stages = staged_store(event_store)
    event_store.write_batch("owner-a", make_batch(["a"], version="1"), checkpoint(line=2))
    before = snapshot(event_store, "owner-a")
    stages.discard_staged(stages.stage_batch("owner-a", make_batch(["a", "b"], version="2")))
    assert snapshot(event_store, "owner-a") == before

    def fail() -> None:
        raise RuntimeError("disk on fire")

    staged = stages.stage_batch("owner-a", make_batch(["a", "c"], first_line=2, version="3"))
    monkeypatch.setattr(event_store, "_before_commit", fail)
    with pytest.raises(RuntimeError, match="disk on fire"):
        stages.commit_staged(staged, checkpoint(line=4))
    assert snapshot(event_store, "owner-a") == before
    assert event_store.checkpoint("import-1") == checkpoint(line=2)
    with pytest.raises(RuntimeError, match="already"):  # once only
        stages.discard_staged(staged)
    monkeypatch.undo()  # and the store's connections still serve
    event_store.write_batch("owner-a", make_batch(["c"], first_line=2), checkpoint(line=3))
    assert existing_ids(event_store, "owner-a", ["a", "b", "c"]) == {"a", "c"}


# -- backend-specific, chosen by capability -------------------------------------------------------


def test_rows_land_in_their_monthly_partition(event_store: EventStore, open_store: Opener) -> None:
    if not event_store.capabilities.time_partitions:
        pytest.skip("this backend does not partition events by time")
    assert open_store.url is not None
    moments = {
        "jan": datetime(2023, 1, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        "feb": datetime(2023, 2, 1, tzinfo=UTC),
        "old": datetime(1901, 6, 15, tzinfo=UTC),
        "far": datetime(2150, 3, 3, tzinfo=UTC),
        "end": datetime(9999, 12, 31, tzinfo=UTC),
    }
    batch = make_batch(list(moments))
    batch["time"] = [micros(m) for m in moments.values()]
    event_store.write_batch("owner-a", batch, checkpoint())
    event_store.write_batch(
        "owner-b",
        make_batch(["feb2"], owner="owner-b", time=micros(datetime(2023, 2, 14, tzinfo=UTC))),
        checkpoint("import-b"),
    )

    with psycopg.connect(libpq_url(open_store.url)) as conn:
        placed: dict[str, str] = dict(
            conn.execute(f"SELECT id, tableoid::regclass::text FROM {EVENTS_TABLE}").fetchall()
        )
        partitions = {
            row[0]
            for row in conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = %s::regclass",
                (EVENTS_TABLE,),
            )
        }
        default_rows = conn.execute(f"SELECT count(*) FROM {EVENTS_TABLE}_default").fetchone()
    assert placed == {
        "jan": "events_p202301",
        "feb": "events_p202302",
        "feb2": "events_p202302",
        "old": "events_p190106",
        "far": "events_p215003",
        "end": "events_p999912",
    }
    assert partitions == {*placed.values(), "events_default"}
    assert default_rows == (0,)


# A row of March 2023 inserted past the store (into the partition of its month, or the default).
_A_MARCH_ROW = (
    f"INSERT INTO {EVENTS_TABLE} (id, owner_id, import_id, line, time) "
    "VALUES ('x', 'o', 'i', 1, '2023-03-05Z')"
)


def test_a_partition_dropped_behind_the_stores_back_is_made_again(
    event_store: EventStore, open_store: Opener
) -> None:
    """An operator drops a month's partition (old events let go) while a server runs that
    made it: that server's next batch for the month gets a new partition, not the default
    partition, which refuses rows (a row there would stop the month's partition from ever
    being attached again)."""
    if not event_store.capabilities.time_partitions:
        pytest.skip("this backend does not partition events by time")
    assert open_store.url is not None
    march = micros(datetime(2023, 3, 5, tzinfo=UTC))
    event_store.write_batch("owner-a", make_batch(["a"], time=march), checkpoint(line=2))
    with psycopg.connect(libpq_url(open_store.url), autocommit=True) as conn:
        conn.execute("DROP TABLE events_p202303")
        with pytest.raises(psycopg.errors.CheckViolation):  # the default partition refuses
            conn.execute(_A_MARCH_ROW)

    event_store.write_batch(
        "owner-a", make_batch(["b"], first_line=2, time=march), checkpoint(line=3)
    )

    assert [row["id"] for row in event_store.rows("owner-a")] == ["b"]
    with psycopg.connect(libpq_url(open_store.url)) as conn:
        placed = conn.execute(f"SELECT id, tableoid::regclass::text FROM {EVENTS_TABLE}").fetchall()
    assert placed == [("b", "events_p202303")]
    assert event_store.checkpoint("import-1") == checkpoint(line=3)


def test_an_older_stores_default_partition_is_made_to_refuse_rows(
    event_store: EventStore, open_store: Opener
) -> None:
    """Setup adds the refusal to a store made before it, without checking the rows the
    default partition may hold already."""
    if not event_store.capabilities.time_partitions:
        pytest.skip("this backend does not partition events by time")
    assert open_store.url is not None
    with psycopg.connect(libpq_url(open_store.url), autocommit=True) as conn:
        conn.execute("ALTER TABLE events_default DROP CONSTRAINT events_default_refuses_rows")
        conn.execute(_A_MARCH_ROW)  # as an older store let it
    open_store().close()  # setup
    with psycopg.connect(libpq_url(open_store.url), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(_A_MARCH_ROW)
        assert conn.execute("SELECT count(*) FROM events_default").fetchone() == (1,)


def test_a_second_process_cannot_open_the_embedded_file(
    event_store: EventStore, open_store: Opener
) -> None:
    if event_store.capabilities.multi_process:
        pytest.skip("this backend is shared between processes")
    event_store.write_batch("owner-a", make_batch(["a"]), checkpoint())
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from eventport.events.store import EventStoreError, open_event_store\n"
        "try:\n"
        "    open_event_store(None, Path(sys.argv[1]))\n"
        "except EventStoreError as exc:\n"
        "    print(exc)\n"
        "    sys.exit(3)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(open_store.data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3, result.stderr
    assert "eventport serve" in result.stdout
    assert event_store.count() == 1  # and the owner goes on undisturbed


def test_connections_the_postgresql_server_ended_are_replaced(open_store: Opener) -> None:
    """A restart, a failover or an administrator ends the connections idle in the store's
    pool: the next statements run on fresh ones instead of failing on those."""
    if open_store.url is None:
        pytest.skip("a PostgreSQL store's connections")
    store = open_store()
    assert isinstance(store, PostgresEventStore)
    with ExitStack() as stack:  # three connections at once, all idle in the pool afterwards
        pids = [stack.enter_context(store._pool.connection()).info.backend_pid for _ in range(3)]
    with psycopg.connect(libpq_url(open_store.url), autocommit=True) as admin:
        ended = admin.execute(
            "SELECT count(*) FROM unnest(%s::int[]) AS pid WHERE pg_terminate_backend(pid)",
            [pids],
        ).fetchone()
    assert ended == (3,)

    assert store.count() == 0
    store.write_batch("owner-a", make_batch(["a", "b"]), checkpoint(line=3))
    assert store.count(owner_id="owner-a") == 2


def test_a_postgresql_store_keeps_connections_for_its_workers_imports(
    open_store: Opener,
) -> None:
    """Each import holds up to three connections (a batch staged, one committing, its
    look-ups): a store opened for four workers keeps 2 + 3 x 4 idle, not the default four."""
    if open_store.url is None:
        pytest.skip("a PostgreSQL store's connections")
    store = open_event_store(open_store.url, open_store.data_dir, workers=4)
    open_store.opened.append(store)
    assert isinstance(store, PostgresEventStore)
    with ExitStack() as stack:
        pids = {stack.enter_context(store._pool.connection()).info.backend_pid for _ in range(16)}
    assert len(pids) == 16
    with ExitStack() as stack:  # the 14 kept serve again; two more are new
        again = {stack.enter_context(store._pool.connection()).info.backend_pid for _ in range(16)}
    assert len(again & pids) == 14


def _event_indexes(url: str) -> dict[str, str]:
    """The events table's own indexes (not its partitions'): name -> definition."""
    with psycopg.connect(libpq_url(url)) as conn:
        rows = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
            "AND tablename = %s",
            (EVENTS_TABLE,),
        ).fetchall()
    return dict(rows)


def test_a_postgresql_store_with_the_old_index_gets_the_new_ones(open_store: Opener) -> None:
    """A store made with the one B-tree on (owner_id, id) gets the hash index on id and the
    B-tree on owner_id at setup, on every partition, and loses the old index; its events
    are still found, replaced and counted by owner."""
    if open_store.url is None:
        pytest.skip("the PostgreSQL store's indexes")
    url = open_store.url
    store = open_store()
    store.write_batch("owner-a", make_batch(["a", "b"], version="1"), checkpoint(line=3))
    store.write_batch("owner-b", make_batch(["a"], owner="owner-b", import_id="b"), checkpoint("b"))
    store.close()
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:  # as the store was made
        for name in _event_indexes(url):
            conn.execute(f'DROP INDEX "{name}"')
        old = f"{EVENTS_TABLE}_owner_id_id_idx"
        conn.execute(f"CREATE INDEX {old} ON {EVENTS_TABLE} (owner_id, id)")
    assert set(_event_indexes(url)) == {old}

    reopened = open_store()
    indexes = _event_indexes(url)
    assert set(indexes) == {f"{EVENTS_TABLE}_id_idx", f"{EVENTS_TABLE}_owner_id_idx"}
    assert "USING hash (id)" in indexes[f"{EVENTS_TABLE}_id_idx"]
    assert "USING btree (owner_id)" in indexes[f"{EVENTS_TABLE}_owner_id_idx"]
    with psycopg.connect(libpq_url(url)) as conn:  # and each partition has both, nothing else
        partition_indexes = conn.execute(
            "SELECT c.relname, count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_index x ON x.indrelid = c.oid WHERE i.inhparent = %s::regclass "
            "GROUP BY c.relname",
            (EVENTS_TABLE,),
        ).fetchall()
    assert partition_indexes
    assert all(count == 2 for _, count in partition_indexes)

    again = make_batch(["b", "c"], import_id="import-2", version="2")
    reopened.write_batch("owner-a", again, checkpoint("import-2", line=3))
    versions = {row["id"]: row["version"] for row in reopened.rows("owner-a")}
    assert versions == {"a": "1", "b": "2", "c": "2"}
    assert [row["id"] for row in reopened.rows("owner-b")] == ["a"]
    assert reopened.count() == 4
    reopened.close()
    assert set(_event_indexes(url)) == set(indexes)  # a second setup changes nothing
    open_store()
    assert _event_indexes(url) == indexes


def test_a_postgresql_store_made_before_the_id_table_gets_its_keys(open_store: Opener) -> None:
    """Stores made before ``event_ids`` have events but no keys: setup fills them in, so
    their ids are found again and replaced, not stored twice."""
    if open_store.url is None:
        pytest.skip("the PostgreSQL store's table of ids")
    store = open_store()
    store.write_batch("owner-a", make_batch(["a", "b"], version="1"), checkpoint(line=3))
    store.write_batch("owner-b", make_batch(["a"], owner="owner-b", import_id="b"), checkpoint("b"))
    store.close()
    with psycopg.connect(libpq_url(open_store.url), autocommit=True) as conn:
        conn.execute(f"DROP TABLE {EVENT_IDS_TABLE}")

    reopened = open_store()
    assert existing_ids(reopened, "owner-a", ["a", "b", "c"]) == {"a", "b"}
    assert existing_ids(reopened, "owner-b", ["a", "b"]) == {"a"}
    again = make_batch(["b", "c"], import_id="import-2", version="2")
    reopened.write_batch("owner-a", again, checkpoint("import-2", line=3))
    versions = {row["id"]: row["version"] for row in reopened.rows("owner-a")}
    assert versions == {"a": "1", "b": "2", "c": "2"}
    assert reopened.count() == 4
    assert existing_ids(reopened, "owner-a", ["a", "b", "c", "d"]) == {"a", "b", "c"}
