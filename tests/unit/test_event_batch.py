"""Normalized event batches: places and agents once each, keyed by their content."""

from __future__ import annotations

import pyarrow as pa
import pytest

from eventport.events.batch import (
    AGENT_FIELDS,
    PLACE_FIELDS,
    ROW_SCHEMA,
    EventBatch,
    dimension_key,
    normalize,
    widen,
)
from eventport.events.schema import ARROW_SCHEMA, COLUMN_NAMES
from eventport.events.store import checked_batch

BERLIN = {"origin_country": "DE", "origin_city": "Berlin", "origin_latitude": 52.52}
PARIS = {"origin_country": "FR", "origin_city": "Paris", "origin_latitude": 48.8566}
PIP = {"platform": "linux", "client": "pip", "client_version": "24.0"}


def wide(rows: list[dict[str, object]]) -> pa.Table:
    columns: dict[str, list[object]] = {name: [] for name in COLUMN_NAMES}
    for i, row in enumerate(rows):
        values = dict.fromkeys(COLUMN_NAMES) | {
            "id": f"e{i}",
            "owner_id": "owner",
            "import_id": "imp",
            "line": i + 1,
            "time": 1_700_000_000_000_000 + i,
        }
        values |= row
        for name in COLUMN_NAMES:
            columns[name].append(values[name])
    return pa.Table.from_pydict(
        {n: pa.array(v, pa.int64()) if n == "time" else v for n, v in columns.items()}
    ).cast(ARROW_SCHEMA)


def test_round_trip_keeps_every_value_and_stores_each_place_once() -> None:
    table = wide(
        [
            BERLIN | PIP,
            PARIS,
            BERLIN | {"client": "npm"},
            {},  # nothing known: no place and no agent
            BERLIN | PIP,
            {"origin_state": "Île-de-France", "ci": "github-actions"},
        ]
    )
    batch = normalize(table)
    assert batch.rows.schema == ROW_SCHEMA
    assert widen(batch).equals(table)
    assert batch.places.num_rows == 3  # Berlin, Paris, the state alone
    assert batch.agents.num_rows == 3  # pip, npm, the CI alone
    keys = batch.rows.column("place_key").to_pylist()
    assert keys[0] == keys[2] == keys[4]
    assert keys[3] is None
    assert batch.rows.column("agent_key").to_pylist()[3] is None


def test_keys_are_content_hashes_the_same_in_every_batch() -> None:
    first = normalize(wide([BERLIN, PARIS]))
    second = normalize(wide([PARIS, {}, BERLIN]))
    assert first.rows.column("place_key").to_pylist() == [
        second.rows.column("place_key")[2].as_py(),
        second.rows.column("place_key")[0].as_py(),
    ]
    berlin = tuple(BERLIN.get(name) for name in PLACE_FIELDS)
    assert first.rows.column("place_key")[0].as_py() == dimension_key(berlin)
    assert dimension_key((None,) * len(AGENT_FIELDS)) is None
    assert dimension_key((1.0,)) != dimension_key((1,))  # values, not just their text
    assert 0 <= dimension_key(("x",)) < 1 << 63  # type: ignore[operator]


def test_an_undefined_key_is_refused() -> None:
    batch = normalize(wide([BERLIN | PIP]))
    broken = EventBatch(batch.rows, batch.places.slice(0, 0), batch.agents)
    with pytest.raises(ValueError, match="place_key"):
        checked_batch("owner", broken)
    with pytest.raises(ValueError, match="owners"):
        checked_batch("someone else", batch)
    assert checked_batch("owner", batch).rows.equals(batch.rows)
    two = normalize(wide([BERLIN | PIP, PARIS, BERLIN]))
    assert two.places.num_rows == 2
    assert checked_batch("owner", two).places.equals(two.places)
    for kept in (0, 1):  # one of the two places the rows name is missing
        broken = EventBatch(two.rows, two.places.slice(kept, 1), two.agents)
        with pytest.raises(ValueError, match="place_key"):
            checked_batch("owner", broken)
    nulled = two.agents.set_column(0, "agent_key", pa.nulls(1, pa.int64()))
    with pytest.raises(ValueError, match="agent_key"):  # a key missing defines nothing
        checked_batch("owner", EventBatch(two.rows, two.places, nulled))
