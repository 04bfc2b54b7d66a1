"""The embedded store's filter of stored ids (events/id_filter.py): whatever its state — built
from a reopened file, grown past its capacity, capped so small that it says "maybe" to nearly
everything, or absent without the C extension — a reused id replaces its event and is found."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pytest

from eventport.events import duckdb_store, id_filter
from eventport.events.duckdb_layout import BATCH_MAYBE
from eventport.events.duckdb_store import DuckDBEventStore
from eventport.events.store import existing_ids
from tests.integration.test_event_store import checkpoint, make_batch


def open_store(path: Path, **options: int) -> DuckDBEventStore:
    store = DuckDBEventStore(path, **options)
    store.setup()
    return store


def write(store: DuckDBEventStore, ids: list[str], version: str, line: int = 1) -> None:
    batch = make_batch(ids, version=version, first_line=line)
    store.write_batch("owner-a", batch, checkpoint(line=line + len(ids)))


def versions(store: DuckDBEventStore) -> dict[str, str]:
    return {row["id"]: row["version"] for row in store.rows("owner-a")}


def replace_and_find(store: DuckDBEventStore) -> None:
    """Three overlapping batches: each reused id keeps only its last event."""
    write(store, [f"e{i}" for i in range(0, 300)], "1")
    assert existing_ids(store, "owner-a", ["e0", "e299", "e300", "x"]) == {"e0", "e299"}
    write(store, [f"e{i}" for i in range(200, 500)], "2", line=301)
    write(store, [f"e{i}" for i in range(0, 600, 3)], "3", line=601)
    found = versions(store)
    expected = {f"e{i}": "1" for i in range(300)} | {f"e{i}": "2" for i in range(200, 500)}
    expected |= {f"e{i}": "3" for i in range(0, 600, 3)}
    assert found == expected
    assert store.count() == len(expected) == 500 + len(range(501, 600, 3))
    assert existing_ids(store, "owner-a", ["e597", "e598", "e600"]) == {"e597"}


def test_a_reopened_store_builds_its_filter_from_the_stored_ids(tmp_path: Path) -> None:
    store = open_store(tmp_path / "events.duckdb")
    write(store, [f"e{i}" for i in range(1000)], "1")
    store.close()

    store = open_store(tmp_path / "events.duckdb")
    try:
        assert existing_ids(store, "owner-a", ["e0", "e999", "e1000"]) == {"e0", "e999"}
        write(store, ["e5", "new"], "2", line=1001)
        assert store.count() == 1001
        assert versions(store)["e5"] == "2"
    finally:
        store.close()


@pytest.mark.skipif(not id_filter.available(), reason="the _hashing extension is not compiled")
def test_a_filter_past_its_capacity_grows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(id_filter, "MIN_CAPACITY", 100)
    store = open_store(tmp_path / "events.duckdb")
    try:
        replace_and_find(store)
        ids = store._shared.ids
        # a part for ~100 (the first batch's 300 go there all the same), then one for twice
        # the 300 held, which takes the new keys of the next two batches. A replaced id's key
        # is not added again, nor a new one the overfull first part already says "maybe" to
        # (it is found all the same), so the filter counts at most the 533 stored keys
        assert ids is not None
        assert ids.parts == 2
        assert 500 <= ids.keys <= 533 == store.count()
        store.close()
        store = open_store(tmp_path / "events.duckdb")
        assert existing_ids(store, "owner-a", ["e0", "e597", "e598"]) == {"e0", "e597"}
        write(store, ["e1"], "4", line=801)
        assert store.count() == 533
        assert versions(store)["e1"] == "4"
        assert store._shared.ids is not None
        assert store._shared.ids.parts == 1  # built from the stored keys
    finally:
        store.close()


def test_a_filter_at_its_cap_still_finds_every_reused_id(tmp_path: Path) -> None:
    store = open_store(tmp_path / "events.duckdb", id_filter_bytes=64)  # one block
    try:
        replace_and_find(store)
    finally:
        store.close()


def test_with_no_memory_for_a_filter_every_id_is_looked_for(tmp_path: Path) -> None:
    store = open_store(tmp_path / "events.duckdb", id_filter_bytes=0)
    try:
        replace_and_find(store)
        assert store._shared.ids is None
    finally:
        store.close()


def test_without_the_extension_every_id_is_looked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(id_filter, "_hashing", None)
    store = open_store(tmp_path / "events.duckdb")
    try:
        replace_and_find(store)
        assert store._shared.ids is None
    finally:
        store.close()


def test_store_objects_of_one_file_share_its_filter(tmp_path: Path) -> None:
    first = open_store(tmp_path / "events.duckdb")
    second = open_store(tmp_path / "." / "events.duckdb")
    other = open_store(tmp_path / "other.duckdb")
    try:
        write(first, ["a", "b"], "1")
        write(second, ["b", "c"], "2", line=3)  # knows b is stored: it replaces it
        assert versions(first) == {"a": "1", "b": "2", "c": "2"}
        assert existing_ids(second, "owner-a", ["a", "d"]) == {"a"}
        assert first._shared is second._shared
        assert other._shared is not first._shared
        write(other, ["a"], "3")
        assert other.count() == 1
        assert first.count() == 3
        first.close()  # the file stays open for the other object of it
        write(second, ["d"], "4", line=5)
        assert versions(second) == {"a": "1", "b": "2", "c": "2", "d": "4"}
    finally:
        first.close()
        second.close()
        other.close()
    # all closed: the next object builds the filter again from the file
    store = open_store(tmp_path / "events.duckdb")
    try:
        assert store._shared is not first._shared
        assert existing_ids(store, "owner-a", ["c", "e"]) == {"c"}
    finally:
        store.close()


def test_an_expected_import_sizes_the_filter_once(tmp_path: Path) -> None:
    """expect_events reserves room in the filter (built now, from the stored ids), so the
    ids that come later find it sized for them, and a reused id is still found."""
    store = open_store(tmp_path / "events.duckdb")
    try:
        write(store, [f"e{i}" for i in range(300)], "1")
        store.expect_events(3_000_000)
        ids = store._shared.ids
        assert ids is not None
        assert ids.capacity >= 3_000_000
        parts = ids.parts
        write(store, [f"e{i}" for i in range(200, 500)], "2", line=301)
        assert ids.parts == parts
        assert versions(store) == {f"e{i}": "1" for i in range(200)} | {
            f"e{i}": "2" for i in range(200, 500)
        }
        store.expect_events(0)  # nothing to expect: nothing changes
        assert ids.parts == parts
    finally:
        store.close()


@pytest.mark.skipif(not id_filter.available(), reason="the _hashing extension is not compiled")
def test_writing_the_same_ids_again_adds_no_keys(tmp_path: Path) -> None:
    """A re-import's ids are all stored before: the filter neither counts them again nor grows
    for them, and still finds them (and the new ones)."""
    store = open_store(tmp_path / "events.duckdb")
    try:
        first = [f"e{i}" for i in range(2000)]
        write(store, first, "1")
        ids = store._shared.ids
        assert ids is not None
        before = (ids.keys, ids.nbytes, ids.parts)
        write(store, first, "2", line=2001)
        assert (ids.keys, ids.nbytes, ids.parts) == before
        write(store, [*first[:10], "new"], "3", line=4001)
        assert ids.keys == before[0] + 1
        assert existing_ids(store, "owner-a", ["e0", "e1999", "new", "x"]) == {"e0", "e1999", "new"}
        assert store.count() == 2001
        assert versions(store)["e1999"] == "2"
    finally:
        store.close()


def test_a_failed_delete_of_replaced_events_raises_its_own_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The DELETE of the events a batch replaces fails inside the write's transaction (in a
    server: out of memory at the write limit). That error reaches the caller, so a write that
    ran out of memory is made again at the full limit; DuckDB's refusal to unregister the
    batch's candidate ids in the aborted transaction replaced it (a resource hunt: the
    attempt was lost and the import waited out its lease). The store then writes on."""
    store = open_store(tmp_path / "events.duckdb")
    try:
        write(store, [f"e{i}" for i in range(100)], "1")
        real = duckdb_store.fetch_all

        def failing_delete(con: Any, query: str, *args: Any) -> Any:
            if query.startswith("DELETE FROM") and BATCH_MAYBE in query:
                return real(con, "SELECT error('the delete ran out (injected)')")
            return real(con, query, *args)

        monkeypatch.setattr(duckdb_store, "fetch_all", failing_delete)
        with pytest.raises(duckdb.InvalidInputException, match="the delete ran out"):
            write(store, [f"e{i}" for i in range(50, 150)], "2", line=101)
        monkeypatch.setattr(duckdb_store, "fetch_all", real)
        write(store, [f"e{i}" for i in range(50, 150)], "2", line=101)
        found = versions(store)
        assert found == {f"e{i}": "1" for i in range(50)} | {f"e{i}": "2" for i in range(50, 150)}
    finally:
        store.close()
