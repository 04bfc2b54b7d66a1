"""The embedded store's own layout: rows plus tables of places and agents, and the upgrade of a
file written before them (one wide events table)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from eventport.events.duckdb_compact import compact_file
from eventport.events.duckdb_layout import (
    AGENTS_TABLE,
    BATCH_AGENTS,
    BATCH_PLACES,
    COMPACTED_ROW_GROUP_ROWS,
    PLACES_TABLE,
    ROWS_TABLE,
    SQL_TYPES,
)
from eventport.events.duckdb_queries import DimensionTexts, selection_params
from eventport.events.duckdb_store import DuckDBEventStore
from eventport.events.schema import COLUMNS
from eventport.events.store import (
    CHECKPOINTS_TABLE,
    EVENTS_TABLE,
    EventStoreError,
    existing_ids,
    open_configured_event_store,
)
from eventport.export.csv import v2_layout
from eventport.export.query import AggregateRow, EventQuery
from eventport.settings import Settings
from tests.integration.test_event_store import T0, checkpoint, expected_rows, make_batch
from tests.unit.test_keys import NOT_UUIDS, UUIDS


def row_group_sizes(con: duckdb.DuckDBPyConnection) -> list[int]:
    """The rows of each of the row table's row groups, in order."""
    found = con.execute(
        "SELECT row_group_id, sum(count) FROM pragma_storage_info(?) "
        "WHERE column_name = 'line' AND segment_type <> 'VALIDITY' GROUP BY row_group_id "
        "ORDER BY row_group_id",
        [ROWS_TABLE],
    ).fetchall()
    return [rows for _, rows in found]


def table_counts(path: Path) -> list[tuple[int]]:
    """The rows of the row, place and agent tables of the (closed) store file at ``path``."""
    con = duckdb.connect(str(path))
    try:
        return [
            con.execute(f"SELECT count(*) FROM {t}").fetchone()  # type: ignore[misc]
            for t in (ROWS_TABLE, PLACES_TABLE, AGENTS_TABLE)
        ]
    finally:
        con.close()


def daily_total(store: DuckDBEventStore, day: datetime) -> AggregateRow:
    """The daily by-total aggregate of owner-a's package "pkg" on ``day`` (one row)."""
    query = EventQuery(
        owner_id="owner-a", start=day, end=day + timedelta(days=1), package_ids=("pkg",)
    )
    (row,) = store.aggregate(query, "daily", "by-total")
    return row


def stored_compressions(path: Path) -> dict[str, list[str]]:
    """The compression methods of each column of the row table (its values' segments, not
    their validity's), once checkpointed."""
    con = duckdb.connect(str(path))
    try:
        con.execute("CHECKPOINT")
        found = con.execute(
            "SELECT column_name, list(DISTINCT compression) FROM pragma_storage_info(?) "
            "WHERE segment_type <> 'VALIDITY' GROUP BY column_name",
            [ROWS_TABLE],
        ).fetchall()
    finally:
        con.close()
    return dict(found)


def test_places_and_agents_are_stored_once(tmp_path: Path) -> None:
    store = DuckDBEventStore(tmp_path / "events.duckdb")
    store.setup()
    try:
        batch = make_batch(
            [f"e{i}" for i in range(50)], origin_country="DE", origin_city="Berlin", client="pip"
        )
        store.write_batch("owner-a", batch, checkpoint(line=51))
        again = make_batch(["f"], first_line=51, origin_country="DE", origin_city="Berlin")
        store.write_batch("owner-a", again, checkpoint(line=52))
        assert store.rows("owner-a") == expected_rows(batch) + expected_rows(again)
    finally:
        store.close()
    assert table_counts(tmp_path / "events.duckdb") == [(51,), (1,), (1,)]


def test_places_and_agents_committed_are_not_inserted_again(tmp_path: Path) -> None:
    """A batch brings only the places and agents whose keys this process has not committed
    (prepare_batch); those of a transaction that failed are not known, and go in with the
    batch made again."""
    store = DuckDBEventStore(tmp_path / "events.duckdb")
    store.setup()
    known = store._shared.known
    try:
        berlin = make_batch(["a", "b"], origin_country="DE", origin_city="Berlin", client="pip")
        store.write_batch("owner-a", berlin, checkpoint(line=3))
        assert (len(known[PLACES_TABLE]), len(known[AGENTS_TABLE])) == (1, 1)
        again = make_batch(["c"], first_line=3, origin_country="DE", origin_city="Berlin")
        tables = dict(store.prepare_batch("owner-a", again).take(store, "owner-a"))
        assert BATCH_PLACES not in tables
        assert BATCH_AGENTS not in tables
        both = make_batch(
            ["c", "d"], first_line=3, origin_country="FR", origin_city="Lyon", client="pip"
        )
        both["origin_city"][0] = "Berlin"
        both["origin_country"][0] = "DE"
        tables = dict(store.prepare_batch("owner-a", both).take(store, "owner-a"))
        assert tables[BATCH_PLACES].column("origin_city").to_pylist() == ["Lyon"]
        assert BATCH_AGENTS not in tables

        def fail() -> None:
            raise RuntimeError("disk on fire")

        store._before_commit = fail  # type: ignore[method-assign]
        with pytest.raises(RuntimeError, match="disk on fire"):
            store.write_batch("owner-a", both, checkpoint(line=5))
        assert len(known[PLACES_TABLE]) == 1  # Lyon's commit failed: not known
        del store._before_commit
        store.write_batch("owner-a", both, checkpoint(line=5))
        assert len(known[PLACES_TABLE]) == 2
        assert store.rows("owner-a") == expected_rows(berlin) + expected_rows(both)
    finally:
        store.close()
    assert table_counts(tmp_path / "events.duckdb") == [(4,), (2,), (1,)]


def test_a_file_with_the_wide_events_table_is_upgraded(tmp_path: Path) -> None:
    """Events written by the earlier layout read back the same after the upgrade."""
    path = tmp_path / "events.duckdb"
    old = [c for c in COLUMNS if c.name not in ("client_runtime", "ci", "remote_address")]
    con = duckdb.connect(str(path))
    columns = ", ".join(f'"{c.name}" {SQL_TYPES[c.type]}' for c in old)
    con.execute(f"CREATE TABLE {EVENTS_TABLE} (id_key UHUGEINT NOT NULL, {columns})")
    batches = [
        make_batch(["a", "b"], origin_country="DE", origin_city="Berlin", platform="linux"),
        make_batch(["c"], first_line=3, origin_country="FR", origin_latitude=48.8566),
        make_batch(["d"], first_line=4),  # nothing known
    ]
    for batch in batches:
        for i in range(len(batch["id"])):
            names = ", ".join(f'"{c.name}"' for c in old)
            marks = ", ".join("?" for _ in old)
            values = [batch[c.name][i] for c in old]
            time = values[[c.name for c in old].index("time")]
            values[[c.name for c in old].index("time")] = None
            con.execute(
                f"INSERT INTO {EVENTS_TABLE} (id_key, {names}) VALUES "
                f"(md5_number(? || chr(0) || ?), {marks})",
                ["owner-a", batch["id"][i], *values],
            )
            con.execute(
                f"UPDATE {EVENTS_TABLE} SET time = make_timestamptz(?::BIGINT) WHERE id = ?",
                [time, batch["id"][i]],
            )
    con.close()

    store = DuckDBEventStore(path)
    store.setup()
    try:
        expected = [row for batch in batches for row in expected_rows(batch)]
        assert store.rows("owner-a") == expected
        assert existing_ids(store, "owner-a", ["a", "d", "zz"]) == {"a", "d"}
        store.write_batch("owner-a", make_batch(["a"], version="2"), checkpoint(line=2))
        assert [r["version"] for r in store.rows("owner-a") if r["id"] == "a"] == ["2"]
    finally:
        store.close()
    con = duckdb.connect(str(path))
    try:
        kinds = dict(
            con.execute(
                "SELECT table_name, table_type FROM information_schema.tables "
                "WHERE table_schema = current_schema()"
            ).fetchall()
        )
        assert kinds[EVENTS_TABLE] == "VIEW"
        assert con.execute(f"SELECT count(*) FROM {PLACES_TABLE}").fetchone() == (2,)
        assert con.execute(f"SELECT min(place_key) FROM {PLACES_TABLE}").fetchone()[0] < 0
    finally:
        con.close()


def test_unique_counts_keep_origin_ids_apart(tmp_path: Path) -> None:
    """Aggregates count distinct origin keys (numbers): ids that differ as texts stay apart."""
    hex_id = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
    origins = [hex_id, hex_id.upper(), "o1", hex_id, None, "0" * 31 + "1", "1"]
    store = DuckDBEventStore(tmp_path / "events.duckdb")
    store.setup()
    try:
        batch = make_batch([f"e{i}" for i in range(len(origins))], package_id="pkg")
        batch["origin_id"] = origins
        store.write_batch("owner-a", batch, checkpoint(line=len(origins) + 1))
        row = daily_total(store, datetime(2023, 11, 14, tzinfo=UTC))
        assert (row.total, row.total_unique) == (7, 5)  # NULL counts in no unique total
    finally:
        store.close()


def test_ids_are_stored_uncompressed_and_rarely_set_columns_in_one_text(tmp_path: Path) -> None:
    """Event ids are nearly all distinct: compressing them costs the write more than it saves
    (see duckdb_layout._COMPRESSION); the other texts keep DuckDB's compression. Origin and
    endpoint ids that do not spell a key, and the other columns imports (nearly) never set,
    live in the row's ``extras`` (see duckdb_layout.EXTRAS), not in columns of their own."""
    store = DuckDBEventStore(tmp_path / "events.duckdb")
    store.setup()
    try:
        ids = [f"event-{i:06d}" for i in range(3000)]
        batch = make_batch(ids, origin_country="DE")
        # texts that are not 32 hex digits (those are kept as numbers: the next test)
        batch["origin_id"] = [f"origin:{i:025x}" for i in range(len(ids))]
        batch["endpoint_id"] = [f"endpoint:{i % 50:023x}" for i in range(len(ids))]  # repeating
        store.write_batch("owner-a", batch, checkpoint(line=3001))
        assert store.rows("owner-a") == expected_rows(batch)
    finally:
        store.close()
    methods = stored_compressions(tmp_path / "events.duckdb")
    assert methods["id"] == ["Uncompressed"]
    assert "Uncompressed" not in methods["origin_country"]
    assert {"origin_id", "endpoint_id", "confidence", "remote_address"}.isdisjoint(methods)
    assert "extras" in methods


def test_the_keys_time_and_line_are_stored_with_the_compression_named_for_them(
    tmp_path: Path,
) -> None:
    """A new file's row table names the compression of its 128-bit keys (uncompressed) and of
    the time and line (bit packing), so DuckDB does not try the others on every row group it
    writes (see duckdb_layout._COMPRESSION); the stored segments are what was named. (A
    segment of one value is still stored as a constant.)"""
    store = DuckDBEventStore(tmp_path / "events.duckdb")
    store.setup()
    try:
        batch = make_batch(UUIDS + [f"event-{i}" for i in range(3000)], origin_country="DE")
        rows = len(batch["id"])  # ids that spell their keys (32 hex digits), all different
        batch["origin_id"] = [f"{i * 7919:032x}" for i in range(rows)]
        batch["endpoint_id"] = [f"{i * 104729:032x}" for i in range(rows)]
        store.write_batch("owner-a", batch, checkpoint(line=len(UUIDS) + 3001))
        assert store.rows("owner-a") == expected_rows(batch)
    finally:
        store.close()
    named = {
        "id_key": "Uncompressed",
        "origin_key": "Uncompressed",
        "endpoint_key": "Uncompressed",
        "id_uuid": "Uncompressed",
        "time": "BitPacking",
        "line": "BitPacking",
    }
    stored = stored_compressions(tmp_path / "events.duckdb")
    con = duckdb.connect(str(tmp_path / "events.duckdb"))
    try:
        (ddl,) = con.execute(  # type: ignore[misc]
            "SELECT sql FROM duckdb_tables() WHERE table_name = ?", [ROWS_TABLE]
        ).fetchone()
    finally:
        con.close()
    definitions = {
        name.strip('"'): rest
        for name, _, rest in (
            part.strip().partition(" ")
            for part in ddl.split("(", 1)[1].rsplit(")", 1)[0].split(",")
        )
    }
    for column, method in named.items():
        assert f"USING COMPRESSION {method}" in definitions[column], column
        assert stored[column] == [method], column
    assert "USING COMPRESSION" not in definitions["place_key"]  # DuckDB chooses


def opened(path: Path) -> DuckDBEventStore:
    """The store of the file at ``path``, set up (a file from before is upgraded by that)."""
    store = DuckDBEventStore(path)
    store.setup()
    return store


def made_older(path: Path, *statements: str) -> None:
    """Run ``statements`` on the (closed) store file at ``path``: what makes it a file from
    before a change of the layout."""
    con = duckdb.connect(str(path))
    try:
        for statement in statements:
            con.execute(statement)
    finally:
        con.close()


def test_a_row_table_from_before_extras_keeps_its_values(tmp_path: Path) -> None:
    """A file whose rows still have the columns that now live in ``extras``: setup moves their
    values there and drops the columns; every event reads back as it was."""
    path = tmp_path / "events.duckdb"
    store = DuckDBEventStore(path)
    store.setup()
    batch = make_batch(["a", "b", "c"], origin_country="DE")
    batch["origin_id"] = ["not hex", None, "0" * 31 + "7"]
    batch["endpoint_id"] = [None, "endpoint", None]
    batch["confidence"] = [0.1 + 0.2, None, float("inf")]  # not 0.3: digits survive
    batch["mtc_quota_exceeded"] = [True, False, None]
    batch["remote_address"] = ["192.0.2.1", None, None]
    store.write_batch("owner-a", batch, checkpoint(line=4))
    want = store.rows("owner-a")
    store.close()
    assert want == expected_rows(batch)
    own_columns = (
        ("origin_id", "VARCHAR"),
        ("endpoint_id", "VARCHAR"),
        ("confidence", "DOUBLE"),
        ("mtc_quota_exceeded", "BOOLEAN"),
        ("remote_address", "VARCHAR"),
    )
    made_older(  # as a file from before: the values in columns of their own
        path,
        *(
            statement
            for name, kind in own_columns
            for statement in (
                f"ALTER TABLE {ROWS_TABLE} ADD COLUMN {name} {kind}",
                f"UPDATE {ROWS_TABLE} SET {name} = "
                f"CAST(json_extract_string(extras, '$.{name}') AS {kind})",
            )
        ),
        f"ALTER TABLE {ROWS_TABLE} DROP COLUMN extras",
    )
    store = opened(path)
    try:
        assert store.rows("owner-a") == want
        newer = make_batch(["d"], first_line=4)
        store.write_batch("owner-a", newer, checkpoint(line=5))
        assert store.rows("owner-a") == want + expected_rows(newer)
    finally:
        store.close()
    con = duckdb.connect(str(path))
    try:
        columns = {row[0] for row in con.execute(f"DESCRIBE {ROWS_TABLE}").fetchall()}
        unset = con.execute(f"SELECT count(*) FROM {ROWS_TABLE} WHERE extras IS NULL").fetchone()
    finally:
        con.close()
    assert "extras" in columns
    assert columns.isdisjoint({"origin_id", "endpoint_id", "confidence", "remote_address"})
    assert unset == (1,)  # the new event's: nothing to keep there


def test_hex_origin_and_endpoint_ids_are_kept_as_the_numbers_they_spell(tmp_path: Path) -> None:
    """An id of 32 lowercase hex digits is stored only as its 128-bit number (no text in the
    row's extras) and read back as the same text, leading zeros and all; any other text is
    kept."""
    spelled = ["0" * 31 + "1", "00ff" + "a" * 28, "f" * 32]
    others = ["F" * 32, "not hex", "0" * 33, "", "é" * 16]
    texts = [*spelled, *others, None]
    store = DuckDBEventStore(tmp_path / "events.duckdb")
    store.setup()
    try:
        batch = make_batch([f"e{i}" for i in range(len(texts))])
        batch["origin_id"] = texts
        batch["endpoint_id"] = list(reversed(texts))
        store.write_batch("owner-a", batch, checkpoint(line=len(texts) + 1))
        assert store.rows("owner-a") == expected_rows(batch)
        raw = (
            store._connection()
            .execute(
                "SELECT json_extract_string(extras, '$.origin_id'), origin_key IS NULL, "
                "json_extract_string(extras, '$.endpoint_id'), endpoint_key IS NULL "
                f"FROM {ROWS_TABLE} ORDER BY line"
            )
            .fetchall()
        )
    finally:
        store.close()
    stored = [(origin, no_key) for origin, no_key, _, _ in raw]
    assert stored[: len(spelled)] == [(None, False)] * len(spelled)
    assert [text for text, _ in stored[len(spelled) : -1]] == others
    assert stored[-1] == (None, True)
    endpoints = [(endpoint, no_key) for _, _, endpoint, no_key in reversed(raw)]
    assert endpoints[: len(spelled)] == [(None, False)] * len(spelled)
    assert [text for text, _ in endpoints[len(spelled) : -1]] == others


def test_a_row_table_from_before_endpoint_keys_gets_the_column(tmp_path: Path) -> None:
    path = tmp_path / "events.duckdb"
    store = DuckDBEventStore(path)
    store.setup()
    batch = make_batch(["old"], endpoint_id="e" * 32, origin_id="0" * 32)
    store.write_batch("owner-a", batch, checkpoint(line=2))
    store.close()
    made_older(  # as a file from before: the text in the row, no key
        path,
        f"ALTER TABLE {ROWS_TABLE} ADD COLUMN endpoint_id VARCHAR",
        f"UPDATE {ROWS_TABLE} SET endpoint_id = '{'e' * 32}'",
        f"ALTER TABLE {ROWS_TABLE} DROP COLUMN endpoint_key",
        f"ALTER TABLE {ROWS_TABLE} DROP COLUMN extras",
    )
    store = opened(path)
    try:
        newer = make_batch(["new"], endpoint_id="e" * 32, first_line=2)
        store.write_batch("owner-a", newer, checkpoint(line=3))
        assert store.rows("owner-a") == expected_rows(batch) + expected_rows(newer)
    finally:
        store.close()


def test_compact_rewrites_the_rows_in_time_order_and_whole_row_groups(tmp_path: Path) -> None:
    """Two batches of 125,000 (as earlier versions wrote: whole row groups and a small one
    each) with times out of order: after compact the same events are in time order, in whole
    row groups, with this version's column layout, in a new file no larger than the old, and
    the store goes on working."""
    day = 86_400_000_000
    start = 1_700_000_000_000_000  # 2023-11-14
    store = DuckDBEventStore(tmp_path / "events.duckdb")
    store.setup()
    try:
        written = []
        size = 125_000
        for part in range(2):  # each row group spans all 40 days
            ids = [f"p{part}-{i}" for i in range(size)]
            batch = make_batch(ids, package_id="pkg", first_line=part * size + 1)
            batch["time"] = [start + ((i * 7 + part) % 40) * day + i for i in range(size)]
            store.write_batch("owner-a", batch, checkpoint(line=(part + 1) * size + 1))
            written += ids
        rows_before = sorted((r["id"], r["time"]) for r in store.rows("owner-a"))
    finally:
        store.close()
    size_before = (tmp_path / "events.duckdb").stat().st_size

    events, before, after = compact_file(tmp_path / "events.duckdb")

    # DuckDB merges the small row groups when the file is closed; their times stay mixed.
    whole, rest = divmod(250_000, COMPACTED_ROW_GROUP_ROWS)
    assert (events, after) == (250_000, whole + 1)
    assert before >= 3
    assert (tmp_path / "events.duckdb").stat().st_size <= size_before  # a new file, not grown
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.duckdb"]
    store = DuckDBEventStore(tmp_path / "events.duckdb")
    store.setup()
    try:
        assert sorted((r["id"], r["time"]) for r in store.rows("owner-a")) == rows_before
        con = store._connection()
        times = [t for (t,) in con.execute(f"SELECT time FROM {ROWS_TABLE}").fetchall()]
        assert times == sorted(times)  # stored in time order
        assert row_group_sizes(con) == [COMPACTED_ROW_GROUP_ROWS] * whole + [rest]
        assert existing_ids(store, "owner-a", ["p0-5", "p1-124999", "no"]) == {"p0-5", "p1-124999"}
        stored = store.checkpoint("import-1")  # checkpoints came along
        assert stored is not None
        assert stored.line == 2 * size + 1
        # A replacement after the rewrite still replaces.
        again = make_batch(["p0-5"], package_id="pkg", time=start + 45 * day)
        store.write_batch("owner-a", again, checkpoint("import-2", line=2))
        assert store.count(owner_id="owner-a") == 250_000
        row = daily_total(store, datetime(2023, 12, 29, tzinfo=UTC))
        assert row.total == 1  # day 45: only the replacement
    finally:
        store.close()
    methods = stored_compressions(tmp_path / "events.duckdb")
    con = duckdb.connect(str(tmp_path / "events.duckdb"))
    try:
        listed = con.execute("SELECT table_name FROM information_schema.tables").fetchall()
        tables = {t for (t,) in listed}
    finally:
        con.close()
    assert methods["id"] == ["Uncompressed"]  # this version's layout
    # The same tables as before (the old file's are not attached or copied under other names).
    assert tables == {ROWS_TABLE, PLACES_TABLE, AGENTS_TABLE, CHECKPOINTS_TABLE, EVENTS_TABLE}


def test_a_batch_is_written_whatever_the_number_of_places_and_agents_stored(
    tmp_path: Path,
) -> None:
    """A batch adds its new places and agents by looking up only its own keys: before, each
    insert held every stored key in a hash table, so a store with more distinct places or user
    agents than that table could hold in DuckDB's memory limit failed every batch from then
    on (seen: 1.5M places at the default 128 MB; here 2M of each against 16 MB)."""
    path = tmp_path / "events.duckdb"
    store = DuckDBEventStore(path)
    store.setup()
    first = make_batch(["a"], origin_country="DE", origin_city="Berlin", client="pip")
    try:
        store.write_batch("owner-a", first, checkpoint(line=2))
        con = store._connection()
        for table, key in ((PLACES_TABLE, "place_key"), (AGENTS_TABLE, "agent_key")):
            # Keys far from any real one (a place's key is a hash), each row otherwise empty.
            con.execute(
                f"INSERT INTO {table} ({key}) SELECT range + 4611686018427387904 "
                "FROM range(2000000)"
            )
    finally:
        store.close()
    store = DuckDBEventStore(path, memory_limit="16MB")
    try:
        second = make_batch(
            ["b", "c"], first_line=2, origin_country="FR", origin_city="Lyon", client="npm"
        )
        store.write_batch("owner-a", second, checkpoint(line=4))  # before: OutOfMemoryException
        again = make_batch(["d"], first_line=4, origin_country="DE", origin_city="Berlin")
        store.write_batch("owner-a", again, checkpoint(line=5))
        assert store.rows("owner-a") == (
            expected_rows(first) + expected_rows(second) + expected_rows(again)
        )
        con = store._connection()
        counts = [
            con.execute(f"SELECT count(*) FROM {t}").fetchone()
            for t in (PLACES_TABLE, AGENTS_TABLE)
        ]
        assert counts == [(2_000_002,), (2_000_002,)]  # Berlin, Lyon; pip, npm: each once
    finally:
        store.close()


def test_a_csv_export_reads_the_texts_of_the_places_and_agents_its_events_name(
    tmp_path: Path,
) -> None:
    """Not of every place and agent stored: those cost each export in proportion to the
    store, however few events it holds."""
    store = DuckDBEventStore(tmp_path / "events.duckdb")
    store.setup()
    day = 86_400_000_000
    try:
        for line, (event_id, when, city, client) in enumerate(
            [("a", 0, "Berlin", "pip"), ("b", 40 * day, "Lyon", "npm"), ("c", day, None, None)],
            start=1,
        ):
            batch = make_batch(
                [event_id],
                first_line=line,
                time=T0 + when,
                package_id="pkg",
                origin_country=city and "XX",
                origin_city=city,
                client=client,
            )
            store.write_batch("owner-a", batch, checkpoint(line=line + 1))
        start = datetime.fromtimestamp(T0 // 1_000_000, UTC)
        query = EventQuery(
            owner_id="owner-a", start=start, end=start + timedelta(days=10), package_ids=("pkg",)
        )
        with store._snapshot_readers(query, 1) as (cursor,):
            tables = DimensionTexts(v2_layout()).tables(cursor, selection_params(query))
        read = {name: table.num_rows for name, table in tables.items()}
        assert read == {"eventport_place_texts": 1, "eventport_agent_texts": 1}  # Berlin, pip
        lines = b"".join(store.export_csv(query, v2_layout())).decode().splitlines()
        assert [line.split(",")[0] for line in lines] == ['"a"', '"c"']
        assert '"Berlin"' in lines[0]
        assert "Berlin" not in lines[1]
    finally:
        store.close()


def raw_ids(path: Path, import_id: str | None = None) -> list[tuple[str | None, bool]]:
    """Each stored row's (of ``import_id``, else every import's) id text and whether it has
    no UUID number, by import and line."""
    con = duckdb.connect(str(path))
    try:
        found = con.execute(
            f"SELECT id, id_uuid IS NULL FROM {ROWS_TABLE} "
            "WHERE import_id = coalesce(?, import_id) ORDER BY import_id, line",
            [import_id],
        )
        return found.fetchall()
    finally:
        con.close()


def test_uuid_ids_are_kept_as_the_numbers_they_spell(tmp_path: Path) -> None:
    """A canonical UUID id is stored only as its number (``id_uuid``, no text) and reads back
    as the same text; any other id keeps its text. Both are found and replaced alike, and
    only within their owner."""
    path = tmp_path / "events.duckdb"
    store = opened(path)
    try:
        batch = make_batch([*UUIDS, *NOT_UUIDS])
        store.write_batch("owner-a", batch, checkpoint(line=len(batch["id"]) + 1))
        assert store.rows("owner-a") == expected_rows(batch)
        other = make_batch(UUIDS[:1], owner="owner-b", import_id="import-b")
        store.write_batch("owner-b", other, checkpoint("import-b", line=2))
        unknown = "4a1c7e0d-2b9f-4c1e-8d3a-6f5e4d3c2b1b"
        asked = [*UUIDS, *NOT_UUIDS, unknown]
        assert existing_ids(store, "owner-a", asked) == {*UUIDS, *NOT_UUIDS}
        assert existing_ids(store, "owner-b", asked) == set(UUIDS[:1])
        again = make_batch([UUIDS[0], NOT_UUIDS[0]], import_id="import-2", version="2")
        store.write_batch("owner-a", again, checkpoint("import-2", line=3))
        rows = {row["id"]: row for row in store.rows("owner-a")}
        assert len(rows) == store.count(owner_id="owner-a") == len(UUIDS) + len(NOT_UUIDS)
        assert (rows[UUIDS[0]]["version"], rows[NOT_UUIDS[0]]["version"]) == ("2", "2")
        assert rows[UUIDS[1]]["version"] is None
        assert store.rows("owner-b") == expected_rows(other)
    finally:
        store.close()
    kept = [(None, False)] * (len(UUIDS) - 1) + [(text, True) for text in NOT_UUIDS[1:]]
    assert NOT_UUIDS[-1] == f"import-1:{len(batch['id'])}"  # the id derived for its line:
    kept[-1] = (None, True)  # not kept either (the next test)
    assert raw_ids(path, "import-1") == kept  # the first two were replaced
    assert raw_ids(path, "import-2") == [(None, False), (NOT_UUIDS[0], True)]


def test_ids_derived_for_their_line_are_not_kept(tmp_path: Path) -> None:
    """An event without $unique_id has the id ``{import id}:{line}``: the row keeps no text
    for it (reads make it again), in a batch of one import or of several. The same text on
    another line, or of another import, is an id like any other and is kept."""
    path = tmp_path / "events.duckdb"
    store = opened(path)
    try:
        derived = make_batch([f"import-1:{line}" for line in range(1, 5)])
        derived["id"][2] = "import-1:99"  # line 3: not its line's
        derived["id"][3] = "import-2:4"  # line 4, of another import
        store.write_batch("owner-a", derived, checkpoint(line=5))
        mixed = make_batch(["import-3:7", UUIDS[0]], import_id="import-3", first_line=7)
        mixed["import_id"][1] = "import-4"
        mixed["id"][1] = "import-4:8"
        store.write_batch("owner-a", mixed, checkpoint("import-3", line=9))
        assert store.rows("owner-a") == expected_rows(derived) + expected_rows(mixed)
        asked = ["import-1:1", "import-1:99", "import-2:4", "import-4:8", "import-1:3"]
        assert existing_ids(store, "owner-a", asked) == set(asked[:4])
        again = make_batch(["import-1:2"], import_id="import-9", version="2")  # replaced
        store.write_batch("owner-a", again, checkpoint("import-9", line=2))
        rows = {row["id"]: row for row in store.rows("owner-a")}
        assert rows["import-1:2"]["version"] == "2"
        assert len(rows) == store.count(owner_id="owner-a") == 6
    finally:
        store.close()
    assert raw_ids(path, "import-1") == [(None, True), ("import-1:99", True), ("import-2:4", True)]
    assert raw_ids(path, "import-3") == [(None, True)]
    assert raw_ids(path, "import-4") == [(None, True)]
    assert raw_ids(path, "import-9") == [("import-1:2", True)]


def test_a_file_from_before_uuid_numbers_is_upgraded_and_compacted(tmp_path: Path) -> None:
    """A file whose ids are all text (and not null): setup adds ``id_uuid``; the old ids are
    still found and replaced, new UUIDs are kept as numbers, and compact moves the old
    UUIDs into numbers too and drops the old derived ids' texts."""
    path = tmp_path / "events.duckdb"
    store = opened(path)
    first = make_batch([UUIDS[0], UUIDS[1], "text-id", "import-1:4"])
    store.write_batch("owner-a", first, checkpoint(line=5))
    store.close()
    texts = "coalesce(CAST(id_uuid AS VARCHAR), import_id || ':' || line)"
    made_older(  # as a file from before: every id text, NOT NULL
        path,
        f"DROP VIEW {EVENTS_TABLE}",
        f"UPDATE {ROWS_TABLE} SET id = {texts} WHERE id IS NULL",
        f"ALTER TABLE {ROWS_TABLE} DROP COLUMN id_uuid",
        f"ALTER TABLE {ROWS_TABLE} ALTER COLUMN id SET NOT NULL",
    )
    store = opened(path)
    try:
        assert store.rows("owner-a") == expected_rows(first)
        assert existing_ids(store, "owner-a", [UUIDS[0], "text-id"]) == {UUIDS[0], "text-id"}
        newer = make_batch([UUIDS[1], UUIDS[2]], import_id="import-2", first_line=4)
        store.write_batch("owner-a", newer, checkpoint("import-2", line=6))
        want = [row for row in expected_rows(first) if row["id"] != UUIDS[1]]
        want += expected_rows(newer)
        assert store.rows("owner-a") == want  # UUIDS[1] replaced
    finally:
        store.close()
    old = [(UUIDS[0], True), ("text-id", True), ("import-1:4", True)]
    assert raw_ids(path) == [*old, (None, False), (None, False)]
    compact_file(path)
    compacted = [(None, False), ("text-id", True), (None, True)]
    assert raw_ids(path) == [*compacted, (None, False), (None, False)]
    store = opened(path)
    try:
        assert store.rows("owner-a") == want
        assert existing_ids(store, "owner-a", UUIDS) == set(UUIDS[:3])
    finally:
        store.close()


def test_compaction_refuses_a_store_a_newer_version_wrote(tmp_path: Path) -> None:
    """A column or table this version does not know (a newer eventport's layout) would be
    left out of the compacted file: before, its values were lost without a word. Refused, and
    the store is left as it was."""
    path = tmp_path / "events.duckdb"
    store = opened(path)
    try:
        store.write_batch("owner-a", make_batch(["a", "b"]), checkpoint(line=3))
    finally:
        store.close()
    made_older(  # newer, rather: a column and a table of a later layout
        path,
        f"ALTER TABLE {ROWS_TABLE} ADD COLUMN later_column VARCHAR DEFAULT 'kept'",
        "CREATE TABLE later_table (x INTEGER)",
    )
    with pytest.raises(EventStoreError, match=r"does not know \(.*later_column.*later_table"):
        compact_file(path)
    con = duckdb.connect(str(path), read_only=True)
    try:
        kept = con.execute(f"SELECT id, later_column FROM {ROWS_TABLE} ORDER BY id").fetchall()
        assert kept == [("a", "kept"), ("b", "kept")]
        assert con.execute("SELECT count(*) FROM later_table").fetchall() == [(0,)]
    finally:
        con.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.duckdb"]


def test_the_server_deletes_what_a_stopped_compaction_left(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`eventport compact` killed half-way leaves its new file (as large as the store) and
    its log: the next server to open the store deletes them, and says so (they stayed until
    the next compaction). The store itself is as it was."""
    store = opened(tmp_path / "events.duckdb")
    try:
        store.write_batch("owner-a", make_batch(["a", "b"]), checkpoint(line=3))
    finally:
        store.close()
    for name in ("events.duckdb.compacting", "events.duckdb.compacting.wal"):
        (tmp_path / name).write_bytes(b"\0" * 4096)
    with caplog.at_level("WARNING", logger="eventport"):
        server = open_configured_event_store(Settings(data_dir=tmp_path, workers=0))
    try:
        assert server.count() == 2
    finally:
        server.close()
    assert sorted(p.name for p in tmp_path.iterdir() if "compacting" in p.name) == []
    said = [
        r.getMessage() for r in caplog.records if "left by an `eventport compact`" in r.getMessage()
    ]
    assert len(said) == 2, said
    assert str(tmp_path / "events.duckdb.compacting") in said[0]
