"""Export from the event store: ``export_batches`` and ``aggregate``, on DuckDB and PostgreSQL.

Hand-made datasets with known counts pin down each rule of :mod:`eventport.export.query`; a
property test (hypothesis) checks on random data that every aggregate equals the count over the
exported events of the same query, and that the export holds exactly the events the writes
left (ids replaced, aborted and failed writes, other owners).
"""

from __future__ import annotations

import itertools
import math
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventport.events.schema import ARROW_TYPES, COLUMN_NAMES, COLUMNS, Batch, empty_batch
from eventport.events.store import EventStore
from eventport.export.query import (
    BREAKDOWNS,
    ORGANIZATION_KINDS,
    ROLLUPS,
    AggregateRow,
    EventQuery,
    Rollup,
    variable_pairs,
)
from tests.integration.test_event_store import Opener, checkpoint, micros
from tests.integration.test_event_store import open_store as open_store  # the fixture

OWNER = "acme"


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


US = timedelta(microseconds=1)


def ev(event_id: str, time: datetime, **values: Any) -> dict[str, Any]:
    """One event: its id, time and any other columns (the rest stay None)."""
    return {"id": event_id, "time": time, **values}


@pytest.fixture
def event_store(open_store: Opener) -> EventStore:
    return open_store()


@pytest.fixture
def small_windows(event_store: EventStore, monkeypatch: pytest.MonkeyPatch) -> EventStore:
    """The store, exporting (where it works in windows: DuckDB) a few events at a time, so
    that small datasets cross window boundaries (in windows even where a small dataset's
    timings would say its events are scattered), and (where it does: DuckDB) with three
    cursors side by side whatever the machine's cores, so that aggregates are cut in parts,
    each counting at most three events (a period with more: in shards of its origins)."""
    monkeypatch.setattr(event_store, "_window_rows", 7, raising=False)
    monkeypatch.setattr(event_store, "_aggregate_events", 3, raising=False)
    monkeypatch.setattr(event_store, "_scattered_seconds", math.inf, raising=False)
    monkeypatch.setattr(event_store, "_export_workers", 3, raising=False)
    return event_store


def batch_of(owner: str, events: list[dict[str, Any]], import_id: str = "import-1") -> Batch:
    """A batch of ``events`` (column → value; ``time`` a datetime), the rest None."""
    batch = empty_batch()
    for line, event in enumerate(events, start=1):
        values: dict[str, Any] = dict.fromkeys(COLUMN_NAMES)
        values.update(owner_id=owner, import_id=import_id, line=line, type="download")
        values.update(event)
        values["time"] = micros(values["time"])
        for name in COLUMN_NAMES:
            batch[name].append(values[name])
    return batch


def write(store: EventStore, owner: str, events: list[dict[str, Any]], import_id: str) -> None:
    store.write_batch(owner, batch_of(owner, events, import_id), checkpoint(import_id))


def exported(store: EventStore, query: EventQuery, **options: Any) -> list[dict[str, Any]]:
    batches = list(store.export_batches(query, COLUMN_NAMES, **options))
    return pa.Table.from_batches(batches, schema=arrow_schema(COLUMN_NAMES)).to_pylist()


def arrow_schema(names: tuple[str, ...] | list[str]) -> pa.Schema:
    by_name = {c.name: c for c in COLUMNS}
    return pa.schema(
        [pa.field(n, ARROW_TYPES[by_name[n].type], by_name[n].nullable) for n in names]
    )


def totals(rows: list[AggregateRow]) -> list[tuple[Any, ...]]:
    """Rows as (date, artifact, *values, total, total_unique) for compact expectations."""
    return [(r.date, r.artifact, *r.values, r.total, r.total_unique) for r in rows]


# -- the reference: counts over exported events, in Python ----------------------------------------


def period(day: date, rollup: Rollup) -> date:
    if rollup == "daily":
        return day
    if rollup == "weekly":
        return day - timedelta(days=day.weekday())
    if rollup == "monthly":
        return day.replace(day=1)
    return day.replace(month=1, day=1)


def expected_aggregate(
    events: list[dict[str, Any]], query: EventQuery, rollup: Rollup, breakdown: str
) -> list[AggregateRow]:
    """What :mod:`eventport.export.query` says ``aggregate`` gives over these events."""
    groups: dict[tuple[Any, ...], tuple[set[str], set[str]]] = defaultdict(lambda: (set(), set()))
    for event in events:
        dnt, excluded = bool(event["dnt"]), bool(event["excluded"])
        if (not dnt) if breakdown == "by-total-do-not-track" else (dnt or excluded):
            continue
        if event["package_id"] in query.package_ids:
            artifact = event["package_id"]
        else:
            artifact = query.pixel_artifacts.get(event["pixel_id"], event["pixel_id"])
        keys: set[tuple[str | None, ...]]
        if breakdown == "by-variable":
            keys = set(variable_pairs(event["variables"]))
        elif breakdown in ORGANIZATION_KINDS:
            kind = event["origin_connection_type"] == ORGANIZATION_KINDS[breakdown]
            keys = {tuple(event[c] if kind else None for c in BREAKDOWNS[breakdown])}
        else:
            keys = {tuple(event[c] for c in BREAKDOWNS[breakdown])}
        day = period(event["time"].astimezone(UTC).date(), rollup)
        for values in keys:
            ids, origins = groups[(day, artifact, values)]
            ids.add(event["id"])
            if event["origin_id"] is not None:
                origins.add(event["origin_id"])

    def order(key: tuple[Any, ...]) -> tuple[Any, ...]:
        day, artifact, values = key
        return (day, artifact, *((v is None, v or "") for v in values))

    return [
        AggregateRow(key[0], key[1], breakdown, key[2], len(ids), len(origins))
        for key, (ids, origins) in sorted(groups.items(), key=lambda item: order(item[0]))
    ]


# -- a hand-made dataset with known counts ---------------------------------------------------------

P1, P2, X1, X2 = "pkg-1", "pkg-2", "px-1", "px-2"
QUERY = EventQuery(
    OWNER,
    start=at(2024, 12, 29, 23, 59, 59, 999_999),
    end=at(2025, 2, 1),
    package_ids=(P1, P2),
    pixel_ids=(X1, X2),
    pixel_artifacts={X1: P1},
)
EDU = {"origin_connection_type": "education", "origin_company": "MIT", "origin_domain": "mit.edu"}
GOV = {"origin_connection_type": "government", "origin_company": "DOE", "origin_domain": "doe.gov"}
ISP = {"origin_connection_type": "isp", "origin_company": "Telekom", "origin_domain": "t.de"}
EVENTS: list[dict[str, Any]] = [
    # the first instant of the query (start is inclusive); a Sunday: the week of 2024-12-23
    ev("e1", at(2024, 12, 29, 23, 59, 59, 999_999), package_id=P1,
         origin_country="DE", origin_id="o1", variables="os=linux&arch=x64", version="1.0",
         platform="Linux", client="pip", client_version="24.0", domain="get.example.com"),
    # Monday 2024-12-30 starts the week that crosses into 2025
    ev("e2", at(2024, 12, 30), package_id=P1, origin_country="DE", origin_id="o1",
         variables="os=linux&os=linux", version="1.0", platform="Linux", client="pip",
         client_version="24.0", referer="https://github.com/"),
    ev("e3", at(2024, 12, 31, 12), package_id=P1, origin_country="US",
         origin_id="o2", variables="q=a+b%26c&flag&=empty&&", version="2.0", **EDU),
    ev("e4", at(2025, 1, 1), package_id=P1, origin_id="o2",
         variables="%E2%82%AC=%FF", **GOV),
    # a pixel attached to pkg-1: reported under pkg-1
    ev("e5", at(2025, 1, 1, 8), pixel_id=X1, origin_country="FR", origin_id="o3",
         **ISP),
    # a pixel of its own: reported under itself
    ev("e6", at(2025, 1, 1, 9), pixel_id=X2, origin_country="DE", variables="",
         cloud_provider_name="AWS", cloud_provider_domain="aws.amazon.com"),
    ev("e7", at(2025, 1, 2, 10), package_id=P2, origin_country="DE", dnt=True),
    ev("e8", at(2025, 1, 2, 11), package_id=P2, origin_country="DE", origin_id="o4",
         excluded=True, variables="os=bot"),
    ev("e9", at(2025, 1, 2, 12), package_id=P2, origin_id="o9", dnt=True,
         excluded=True),
    ev("e10", at(2025, 1, 2, 13), package_id=P2, origin_country="DE", origin_id="o1",
         dnt=False, excluded=False, variables="os=linux"),
    # a package and a selected pixel: the package is the artifact
    ev("e11", at(2025, 1, 2, 14), package_id=P2, pixel_id=X1, origin_id="o5"),
    # never selected: another package; the end instant (end is exclusive)
    ev("e12", at(2025, 1, 1), package_id="pkg-other", origin_id="o1"),
    ev("e13", at(2025, 2, 1), package_id=P1, origin_id="o1"),
]  # fmt: skip
D = date


@pytest.fixture
def dataset(event_store: EventStore) -> EventStore:
    write(event_store, OWNER, EVENTS, "import-1")
    # Another owner with the same packages and ids: never part of the owner's answers.
    other = [dict(event, origin_id="x") for event in EVENTS]
    write(event_store, "someone-else", other, "import-2")
    return event_store


def aggregate(store: EventStore, rollup: Rollup, breakdown: str, **change: Any) -> list[Any]:
    query = EventQuery(**{**QUERY.__dict__, **change})
    return totals(list(store.aggregate(query, rollup, breakdown)))


def test_by_total_in_every_rollup(dataset: EventStore) -> None:
    assert aggregate(dataset, "daily", "by-total") == [
        (D(2024, 12, 29), P1, 1, 1),
        (D(2024, 12, 30), P1, 1, 1),
        (D(2024, 12, 31), P1, 1, 1),
        (D(2025, 1, 1), P1, 2, 2),
        (D(2025, 1, 1), X2, 1, 0),
        (D(2025, 1, 2), P2, 2, 2),
    ]
    assert aggregate(dataset, "weekly", "by-total") == [  # Monday weeks, across the new year
        (D(2024, 12, 23), P1, 1, 1),
        (D(2024, 12, 30), P1, 4, 3),
        (D(2024, 12, 30), P2, 2, 2),
        (D(2024, 12, 30), X2, 1, 0),
    ]
    assert aggregate(dataset, "monthly", "by-total") == [
        (D(2024, 12, 1), P1, 3, 2),
        (D(2025, 1, 1), P1, 2, 2),
        (D(2025, 1, 1), P2, 2, 2),
        (D(2025, 1, 1), X2, 1, 0),
    ]
    assert aggregate(dataset, "yearly", "by-total") == [
        (D(2024, 1, 1), P1, 3, 2),
        (D(2025, 1, 1), P1, 2, 2),
        (D(2025, 1, 1), P2, 2, 2),
        (D(2025, 1, 1), X2, 1, 0),
    ]


def test_do_not_track_counts_only_dnt_events_excluded_or_not(dataset: EventStore) -> None:
    assert aggregate(dataset, "daily", "by-total-do-not-track") == [(D(2025, 1, 2), P2, 2, 1)]


def test_start_is_inclusive_and_end_exclusive_to_the_microsecond(dataset: EventStore) -> None:
    later = aggregate(dataset, "yearly", "by-total", start=QUERY.start + US)
    assert later[0] == (D(2024, 1, 1), P1, 2, 2)  # e1 is gone (it was 3, 2), nothing else
    longer = aggregate(dataset, "yearly", "by-total", end=QUERY.end + US)
    assert longer[1] == (D(2025, 1, 1), P1, 3, 3)  # e13 is in
    assert aggregate(dataset, "daily", "by-total", end=QUERY.start) == []
    ids = [row["id"] for row in exported(dataset, QUERY)]
    assert ids == ["e1", "e2", "e3", "e4", "e5", "e6", "e7", "e8", "e9", "e10", "e11"]


def test_by_country_has_a_row_for_the_unknown_country(dataset: EventStore) -> None:
    assert aggregate(dataset, "monthly", "by-country") == [
        (D(2024, 12, 1), P1, "DE", 2, 1),
        (D(2024, 12, 1), P1, "US", 1, 1),
        (D(2025, 1, 1), P1, "FR", 1, 1),
        (D(2025, 1, 1), P1, None, 1, 1),
        (D(2025, 1, 1), P2, "DE", 1, 1),
        (D(2025, 1, 1), P2, None, 1, 1),
        (D(2025, 1, 1), X2, "DE", 1, 0),
    ]


def test_company_cloud_and_organization_breakdowns(dataset: EventStore) -> None:
    assert aggregate(dataset, "yearly", "by-company") == [
        (D(2024, 1, 1), P1, "MIT", "mit.edu", 1, 1),
        (D(2024, 1, 1), P1, None, None, 2, 1),
        (D(2025, 1, 1), P1, "DOE", "doe.gov", 1, 1),
        (D(2025, 1, 1), P1, "Telekom", "t.de", 1, 1),
        (D(2025, 1, 1), P2, None, None, 2, 2),
        (D(2025, 1, 1), X2, None, None, 1, 0),
    ]
    assert aggregate(dataset, "yearly", "by-educational-organization") == [
        (D(2024, 1, 1), P1, "MIT", "mit.edu", 1, 1),
        (D(2024, 1, 1), P1, None, None, 2, 1),
        (D(2025, 1, 1), P1, None, None, 2, 2),  # a government and an ISP network
        (D(2025, 1, 1), P2, None, None, 2, 2),
        (D(2025, 1, 1), X2, None, None, 1, 0),
    ]
    assert aggregate(dataset, "yearly", "by-govermental-organization")[1:3] == [
        (D(2025, 1, 1), P1, "DOE", "doe.gov", 1, 1),
        (D(2025, 1, 1), P1, None, None, 1, 1),
    ]
    assert aggregate(dataset, "yearly", "by-cloudprovider")[-1] == (
        D(2025, 1, 1), X2, "AWS", "aws.amazon.com", 1, 0
    )  # fmt: skip


def test_platform_version_client_domain_referer(dataset: EventStore) -> None:
    december = {"end": at(2025, 1, 1)}
    assert aggregate(dataset, "monthly", "by-platform", **december) == [
        (D(2024, 12, 1), P1, "Linux", 2, 1),
        (D(2024, 12, 1), P1, None, 1, 1),
    ]
    assert aggregate(dataset, "monthly", "by-version", **december) == [
        (D(2024, 12, 1), P1, "1.0", 2, 1),
        (D(2024, 12, 1), P1, "2.0", 1, 1),
    ]
    assert aggregate(dataset, "monthly", "by-client", **december) == [
        (D(2024, 12, 1), P1, "pip", "24.0", 2, 1),
        (D(2024, 12, 1), P1, None, None, 1, 1),
    ]
    assert aggregate(dataset, "monthly", "by-domain", **december) == [
        (D(2024, 12, 1), P1, "get.example.com", 1, 1),
        (D(2024, 12, 1), P1, None, 2, 2),
    ]
    assert aggregate(dataset, "monthly", "by-referer", **december) == [
        (D(2024, 12, 1), P1, "https://github.com/", 1, 1),
        (D(2024, 12, 1), P1, None, 2, 2),
    ]


def test_by_variable_decodes_and_counts_each_event_once_per_pair(dataset: EventStore) -> None:
    assert aggregate(dataset, "monthly", "by-variable") == [
        (D(2024, 12, 1), P1, "", "empty", 1, 1),
        (D(2024, 12, 1), P1, "arch", "x64", 1, 1),
        (D(2024, 12, 1), P1, "flag", "", 1, 1),
        (D(2024, 12, 1), P1, "os", "linux", 2, 1),  # e2 says it twice: counted once
        (D(2024, 12, 1), P1, "q", "a b&c", 1, 1),
        (D(2025, 1, 1), P1, "€", "\ufffd", 1, 1),  # invalid UTF-8 decodes to U+FFFD
        (D(2025, 1, 1), P2, "os", "linux", 1, 1),  # e8 (os=bot) is excluded
    ]


@pytest.mark.parametrize(
    ("variables", "pairs"),
    [
        ("a=1&b=2", [("a", "1"), ("b", "2")]),
        ("a+b=c+d", [("a b", "c d")]),
        ("x=%zz&y=%4&z=%", [("x", "%zz"), ("y", "%4"), ("z", "%")]),  # not escapes: kept
        ("k=%C3%A9%E2%82%AC%F0%9F%9A%80", [("k", "é€🚀")]),  # multi-byte UTF-8
        ("k=%C3&l=%e2%82&m=%C3%28", [("k", "\ufffd"), ("l", "\ufffd"), ("m", "\ufffd(")]),
        ("n=%00", [("n", "\x00")]),
        ("é=ü&%3D=%26", [("é", "ü"), ("=", "&")]),
        ("a=b=c&=&==", [("a", "b=c"), ("", ""), ("", "=")]),
        ("&&", []),
    ],
)
def test_variables_decode_the_same_everywhere(
    event_store: EventStore, variables: str, pairs: list[tuple[str, str]]
) -> None:
    write(event_store, OWNER, [ev("v", at(2025, 1, 1), package_id=P1,
                                    variables=variables)], "import-1")  # fmt: skip
    rows = list(event_store.aggregate(QUERY, "daily", "by-variable"))
    assert [r.values for r in rows] == sorted(set(pairs))
    assert variable_pairs(variables) == pairs


def test_pixels_report_under_their_artifact_and_selection_by_pixel_only(
    dataset: EventStore,
) -> None:
    pixels_only = aggregate(dataset, "yearly", "by-total", package_ids=())
    # e5 (px-1 → pkg-1), e6 (px-2 → itself), e11 (pkg-2 not selected, px-1 → pkg-1)
    assert pixels_only == [(D(2025, 1, 1), P1, 2, 2), (D(2025, 1, 1), X2, 1, 0)]
    unmapped = aggregate(dataset, "yearly", "by-total", package_ids=(), pixel_artifacts={})
    assert unmapped == [(D(2025, 1, 1), X1, 2, 2), (D(2025, 1, 1), X2, 1, 0)]
    assert aggregate(dataset, "yearly", "by-total", package_ids=(), pixel_ids=()) == []
    assert exported(dataset, EventQuery(OWNER, QUERY.start, QUERY.end)) == []


def test_another_owner_never_appears(dataset: EventStore) -> None:
    theirs = EventQuery(**{**QUERY.__dict__, "owner_id": "someone-else"})
    assert {row["origin_id"] for row in exported(dataset, theirs)} == {"x"}
    assert "x" not in {row["origin_id"] for row in exported(dataset, QUERY)}
    assert aggregate(dataset, "yearly", "by-total", owner_id="nobody") == []


# -- export_batches ------------------------------------------------------------------------------


TRICKY_TEXT = 'Zürich ✓ 東京 🚀 "quoted", comma; back\\slash\ttab\nnewline\r\nCRLF ,"'


def test_export_orders_by_time_then_id_with_every_column(event_store: EventStore) -> None:
    same = at(2025, 1, 1, 12)
    events = [ev(event_id, same, package_id=P1) for event_id in ["b", "é", "a", "B", "a2"]]
    full = {
        c.name: {"text": TRICKY_TEXT, "double": -33.868820123456789, "boolean": True}[c.type]
        for c in COLUMNS
        if c.nullable and c.type in ("text", "double", "boolean")
    }
    events += [
        ev("first", same - US, **{**full, "package_id": P1, "pixel_id": X1}),
        ev("empties", same - 2 * US, **{
            **{name: "" for name, value in full.items() if isinstance(value, str)},
            "package_id": P1, "dnt": False, "confidence": 0.0, "origin_latitude": 5e-324,
            "origin_longitude": 1.7976931348623157e308}),
        ev("oldest", at(1, 1, 1), package_id=P1, variables="NULL", referer='""'),
        ev("newest", at(9999, 12, 31, 23, 59, 59, 999_998), pixel_id=X2, line=2**62),
    ]  # fmt: skip
    events[-3].update(dnt=False, excluded=False, mtc_quota_exceeded=False)
    write(event_store, OWNER, events, "import-1")
    end_of_time = datetime.max.replace(tzinfo=UTC)  # exclusive: the very last µs stays out
    rows = exported(event_store, EventQuery(OWNER, at(1, 1, 1), end_of_time, (P1,), (X2,)))
    ids = ["oldest", "empties", "first", "B", "a", "a2", "b", "é", "newest"]  # time, then id
    assert [r["id"] for r in rows] == ids
    stored = {row["id"]: row for row in event_store.rows(OWNER)}
    assert rows == [stored[i] for i in ids]  # every column, as stored
    assert (rows[0]["variables"], rows[0]["referer"]) == ("NULL", '""')
    assert (rows[1]["referer"], rows[1]["confidence"], rows[1]["dnt"]) == ("", 0.0, False)


def test_export_columns_are_the_ones_asked_in_that_order(dataset: EventStore) -> None:
    names = ["variables", "time", "id", "line", "confidence", "dnt"]
    batches = list(dataset.export_batches(QUERY, names))
    assert all(batch.schema == arrow_schema(names) for batch in batches)
    assert pa.Table.from_batches(batches).column("id").to_pylist()[:2] == ["e1", "e2"]
    for wrong in (["id", "nope"], [], ["id", "id"]):
        with pytest.raises(ValueError, match="column"):
            dataset.export_batches(QUERY, wrong)
    with pytest.raises(ValueError, match="aware"):
        dataset.export_batches(EventQuery(OWNER, datetime(2025, 1, 1), QUERY.end, (P1,)), ["id"])
    with pytest.raises(ValueError, match="breakdown"):
        dataset.aggregate(QUERY, "daily", "by-nothing")
    with pytest.raises(ValueError, match="rollup"):
        dataset.aggregate(QUERY, "hourly", "by-total")  # type: ignore[arg-type]


def many_events(
    count: int, start: datetime = at(2025, 1, 3), prefix: str = "m"
) -> list[dict[str, Any]]:
    return [
        ev(f"{prefix}{i:04d}", start + i * timedelta(seconds=1), package_id=P1)
        for i in range(count)
    ]


@pytest.mark.parametrize("seconds_apart", [1, 1000, 0])
def test_a_large_result_arrives_in_several_batches(
    small_windows: EventStore, seconds_apart: int
) -> None:
    event_store = small_windows
    events = many_events(250)
    for i, event in enumerate(events):  # in one hour, across hours, or all at one instant
        event["time"] = at(2025, 1, 3) + i * seconds_apart * timedelta(seconds=1)
    write(event_store, OWNER, events[::2], "import-1")
    write(event_store, OWNER, events[1::2], "import-2")
    batches = list(event_store.export_batches(QUERY, ["id", "time"], batch_rows=64))
    assert len(batches) >= 4
    assert all(0 < batch.num_rows <= 64 for batch in batches)
    ids = pa.Table.from_batches(batches).column("id").to_pylist()
    assert ids == [f"m{i:04d}" for i in range(250)]


def in_thread(action: Callable[[], None], seconds: float = 30) -> None:
    """Run ``action`` in a thread; fail (instead of hanging) if it does not finish."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            action()
        except BaseException as exc:  # reported in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "blocked: the export holds what the write needs"
    assert errors == []


def test_imports_go_on_while_an_export_streams(event_store: EventStore) -> None:
    write(event_store, OWNER, many_events(200), "import-1")
    stream = event_store.export_batches(QUERY, ["id"], batch_rows=50)
    first = next(stream)
    # A write while the export is open, into a month no event had before (a new partition).
    late = [ev("late", at(2025, 1, 31, 23), package_id=P1), ev("new", at(2031, 7, 1))]
    in_thread(lambda: write(event_store, OWNER, late, "import-2"))
    rest = [batch.column("id").to_pylist() for batch in stream]
    seen = first.column("id").to_pylist() + list(itertools.chain.from_iterable(rest))
    assert seen == [f"m{i:04d}" for i in range(200)]  # the export's own snapshot
    assert [r["id"] for r in exported(event_store, QUERY)][-1] == "late"
    assert event_store.count(owner_id=OWNER) == 202


def test_a_request_s_aggregates_count_one_snapshot(small_windows: EventStore) -> None:
    """The breakdowns of one request count the same events, though a write commits between
    them: the events moved to another day after by-total was counted are still counted where
    they were by by-version (before, each breakdown read its own snapshot)."""
    store = small_windows
    before = [ev(f"s{i}", at(2025, 1, 3, 12), package_id=P1, version="1.0") for i in range(4)]
    write(store, OWNER, before, "import-1")
    kinds: list[tuple[Rollup, str]] = [("daily", "by-total"), ("daily", "by-version")]
    stream = store.aggregates(QUERY, kinds)
    first = next(stream)
    assert (first[0], first[1].breakdown, first[1].total) == ("daily", "by-total", 4)
    moved = [{**event, "time": at(2025, 1, 20, 12)} for event in before]
    in_thread(lambda: write(store, OWNER, moved, "import-2"))  # the same ids, another day
    rest = [(rollup, row.breakdown, row.date, row.total) for rollup, row in stream]
    assert rest == [("daily", "by-version", date(2025, 1, 3), 4)]
    after = [(r.breakdown, r.date, r.total) for _, r in store.aggregates(QUERY, kinds)]
    assert after == [("by-total", date(2025, 1, 20), 4), ("by-version", date(2025, 1, 20), 4)]


def test_closing_an_export_early_releases_it(event_store: EventStore) -> None:
    # Enough events that the store is still sending when the reader stops.
    big = [{**event, "user_agent": "x" * 200} for event in many_events(20_000)]
    write(event_store, OWNER, big, "import-1")
    for _ in range(6):  # more than the connections a pool keeps idle
        stream = event_store.export_batches(QUERY, COLUMN_NAMES, batch_rows=100)
        assert next(stream).num_rows == 100
        in_thread(stream.close)
        rows = event_store.aggregate(QUERY, "daily", "by-total")
        assert next(rows).total == 20_000
        rows.close()
    in_thread(lambda: write(event_store, OWNER, many_events(5, at(2025, 1, 4), "n"), "import-2"))
    assert event_store.count(owner_id=OWNER) == 20_005
    assert len(exported(event_store, QUERY)) == 20_005


def test_an_export_never_started_holds_nothing(event_store: EventStore) -> None:
    write(event_store, OWNER, many_events(3), "import-1")
    streams = [event_store.export_batches(QUERY, ["id"]) for _ in range(3)]
    in_thread(lambda: write(event_store, OWNER, many_events(4), "import-2"))
    assert len(exported(event_store, QUERY)) == 4
    del streams


# -- the property: aggregates equal counts over the export ---------------------------------------

BASE = at(2024, 12, 27)  # a Friday: the range crosses a week, a month and a year
EDGES = [at(2024, 12, 29, 23, 59, 59, 999_999), at(2024, 12, 30), at(2025, 1, 1), at(2025, 1, 6)]
SPAN_US = 14 * 24 * 3600 * 1_000_000

instants = st.one_of(
    st.sampled_from(EDGES),
    st.sampled_from(EDGES).map(lambda t: t - US),
    st.integers(0, SPAN_US).map(lambda n: BASE + n * US),
)


def maybe(*values: Any) -> st.SearchStrategy[Any]:
    return st.sampled_from([None, *values])


items = st.one_of(
    st.sampled_from(["a=1", "a+b=%20", "a%20b=+", "%zz", "=", "%C3=%A9"]),
    st.text(alphabet="ab=%+2CF8é€0 ", max_size=6),
)
# Items repeat (an event counts once per pair); some are empty ("a&&b"), some malformed.
variables = st.lists(items, max_size=4).map("&".join)
event_values = st.fixed_dictionaries(
    {
        "id": st.sampled_from([f"id{i}" for i in range(10)] + ["é", "B"]),
        "time": instants,
        "package_id": maybe(P1, P2, "pkg-other"),
        "pixel_id": maybe(X1, X2, "px-other"),
        "origin_id": maybe("o1", "o2", "o3"),
        "origin_country": maybe("DE", "US", "FR"),
        "origin_company": maybe("MIT", "DOE"),
        "origin_domain": maybe("mit.edu", "doe.gov"),
        "origin_connection_type": maybe("education", "government", "isp"),
        "cloud_provider_name": maybe("AWS"),
        "cloud_provider_domain": maybe("aws.amazon.com"),
        "platform": maybe("Linux", "macOS"),
        "version": maybe("1.0", "2.0"),
        "client": maybe("pip", "npm"),
        "client_version": maybe("24.0"),
        "domain": maybe("get.example.com"),
        "referer": maybe("https://github.com/"),
        "variables": st.one_of(maybe(""), variables),
        "dnt": maybe(False, True),
        "excluded": maybe(False, True),
    }
)
batches = st.lists(event_values, min_size=1, max_size=12, unique_by=lambda e: e["id"])


@dataclass
class Import:
    batches: list[list[dict[str, Any]]]
    written: int  # batches written before the import was aborted (all: it finished)
    fails_next: bool  # the batch after those fails inside its transaction
    resumes: bool  # the last written batch is written again (a worker resuming)


imports = st.builds(
    lambda batches, aborted, cut, fails, resumes: Import(
        batches, min(cut, len(batches)) if aborted else len(batches), fails, resumes
    ),
    st.lists(batches, min_size=1, max_size=3),
    st.booleans(),
    st.integers(0, 2),
    st.booleans(),
    st.booleans(),
)
FIRST, LAST = BASE, BASE + SPAN_US * US
queries = st.builds(
    lambda times, packages, pixels, mapped: (min(times), max(times), packages, pixels, mapped),
    st.one_of(st.just((FIRST, LAST)), st.tuples(instants, st.one_of(instants, st.just(LAST)))),
    st.one_of(st.just((P1, P2)), st.lists(st.sampled_from([P1, P2, "pkg-none"])).map(tuple)),
    st.one_of(st.just((X1, X2)), st.lists(st.sampled_from([X1, X2]), max_size=2).map(tuple)),
    st.booleans(),
)
owners = itertools.count()


class Failed(RuntimeError):
    pass


def _fail() -> None:
    raise Failed("the import was aborted mid-batch")


def run_imports(store: EventStore, owner: str, plan: list[Import]) -> dict[str, dict[str, Any]]:
    """Write the plan; return what the store should hold for ``owner`` (id → event)."""
    model: dict[str, dict[str, Any]] = {}
    for number, job in enumerate(plan):
        import_id = f"{owner}-import-{number}"
        written = job.batches[: job.written]
        if job.resumes and written:
            written = [*written, written[-1]]
        for events in written:
            write(store, owner, events, import_id)
            for line, event in enumerate(events, start=1):
                model[event["id"]] = dict.fromkeys(COLUMN_NAMES) | event | {
                    "owner_id": owner, "import_id": import_id, "line": line, "type": "download"
                }  # fmt: skip
        if job.fails_next and job.written < len(job.batches):
            store._before_commit = _fail  # type: ignore[attr-defined]
            try:
                with pytest.raises(Failed):
                    write(store, owner, job.batches[job.written], import_id)
            finally:
                del store._before_commit  # type: ignore[attr-defined]
    return model


@settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    plan=st.lists(imports, min_size=1, max_size=3),
    query=queries,
    rollup=st.sampled_from(ROLLUPS),
)
def test_every_aggregate_is_a_count_over_the_export(
    small_windows: EventStore, plan: list[Import], query: tuple[Any, ...], rollup: Rollup
) -> None:
    event_store = small_windows
    owner = f"owner-{next(owners)}"  # a fresh owner per example: the store is shared
    model = run_imports(event_store, owner, plan)
    # Another owner's events with the same ids and artifacts: never counted.
    own = ("owner_id", "import_id", "line", "type")
    decoy = [
        {k: v for k, v in event.items() if k not in own} | {"origin_id": "decoy"}
        for event in model.values()
    ]
    if decoy:
        write(event_store, f"{owner}-other", decoy, f"{owner}-decoy")
    start, end, packages, pixels, mapped = query
    q = EventQuery(owner, start, end, packages, pixels, {X1: P1} if mapped else {})

    events = exported(event_store, q, batch_rows=5)
    selected = [
        e
        for e in model.values()
        if start <= e["time"] < end and (e["package_id"] in packages or e["pixel_id"] in pixels)
    ]
    want = sorted(selected, key=lambda e: (e["time"], e["id"].encode()))
    assert events == want

    total = {(r.date, r.artifact): r for r in event_store.aggregate(q, rollup, "by-total")}
    for breakdown in BREAKDOWNS:
        rows = list(event_store.aggregate(q, rollup, breakdown))
        assert rows == expected_aggregate(events, q, rollup, breakdown), breakdown
        if breakdown in ("by-variable", "by-total-do-not-track"):
            continue
        sums: dict[tuple[date, str], int] = defaultdict(int)
        for row in rows:
            sums[(row.date, row.artifact)] += row.total
        assert sums == {key: row.total for key, row in total.items()}, breakdown
    dnt = list(event_store.aggregate(q, rollup, "by-total-do-not-track"))
    assert sum(row.total for row in dnt) == sum(1 for e in events if e["dnt"])


def test_the_reference_counts_like_the_hand_made_expectations() -> None:
    """The property's reference agrees with the hand-made numbers above."""
    events = [
        dict.fromkeys(COLUMN_NAMES) | e
        for e in EVENTS
        if QUERY.start <= e["time"] < QUERY.end and e.get("package_id") != "pkg-other"
    ]
    assert totals(expected_aggregate(events, QUERY, "weekly", "by-total")) == [
        (D(2024, 12, 23), P1, 1, 1),
        (D(2024, 12, 30), P1, 4, 3),
        (D(2024, 12, 30), P2, 2, 2),
        (D(2024, 12, 30), X2, 1, 0),
    ]


@pytest.mark.parametrize("rollup", ROLLUPS)
def test_aggregates_counted_in_shards_equal_those_counted_whole(
    dataset: EventStore, monkeypatch: pytest.MonkeyPatch, rollup: Rollup
) -> None:
    """Where a store counts an aggregate in parts of a few events (DuckDB: at most one here,
    so every period with more is counted in shards of its origins), the rows are those of
    the whole count: the shards' counts add up, the order is kept."""
    whole = {b: list(dataset.aggregate(QUERY, rollup, b)) for b in BREAKDOWNS}
    if not hasattr(dataset, "_aggregate_events"):
        pytest.skip("this store counts an aggregate in one query")
    monkeypatch.setattr(dataset, "_aggregate_events", 1)
    monkeypatch.setattr(dataset, "_export_workers", 2)
    sharded = {b: list(dataset.aggregate(QUERY, rollup, b)) for b in BREAKDOWNS}
    assert sharded == whole
    assert sum(len(rows) for rows in whole.values()) > len(BREAKDOWNS)  # not all empty


def test_the_embedded_store_answers_one_read_at_a_time(
    dataset: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each export or aggregate may use the whole DuckDB memory limit: side by side, requests
    that fit alone ran out of it (19 of 20 concurrent ones got a 503 at 128 MB, and a CSV
    ended midway). A read waits for the one before it, and says it is busy past a limit."""
    if dataset.capabilities.multi_process:
        pytest.skip("PostgreSQL sizes each query's memory itself")
    from eventport.domain.errors import StoreBusy
    from eventport.events import duckdb_store

    monkeypatch.setattr(duckdb_store, "READ_WAIT_SECONDS", 0.3)
    holding = dataset.export_batches(QUERY, ["id"], batch_rows=1)
    next(holding)  # an export under way: its snapshot, and the turn, are held
    with pytest.raises(StoreBusy, match="one at a time"):
        list(dataset.aggregate(QUERY, "daily", "by-total"))
    waited: list[list[Any]] = []
    waiter = threading.Thread(
        target=lambda: waited.append(aggregate(dataset, "monthly", "by-total"))
    )
    monkeypatch.setattr(duckdb_store, "READ_WAIT_SECONDS", 30.0)
    waiter.start()
    waiter.join(0.5)
    assert waiter.is_alive()  # waiting for its turn
    holding.close()  # the export ends (or its client went away): the next read goes
    waiter.join(30)
    assert not waiter.is_alive()
    assert waited == [aggregate(dataset, "monthly", "by-total")]
