"""CSV straight from the event store (``export_csv``), on DuckDB and PostgreSQL.

Whatever way a store writes its CSV (DuckDB builds each line in SQL), the bytes must be those
of the reference writer, :func:`eventport.export.csv.csv_lines`, over ``export_batches`` of the
same query: hand-picked awkward values, a literal expected line, and a property test over
random values (hypothesis), with windows small enough that both of DuckDB's paths run (a window
sorted by Arrow, and an hour with more events than a window, sorted by DuckDB).
"""

from __future__ import annotations

import itertools
import math
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventport.events.store import EventStore
from eventport.export.csv import V1_LAYOUT, CsvLayout, csv_lines, v1_layout, v2_layout
from eventport.export.query import EventQuery
from tests.integration.test_event_store import open_store as open_store  # the fixture
from tests.integration.test_export_store import (
    OWNER,
    P1,
    P2,
    TRICKY_TEXT,
    X1,
    X2,
    at,
    ev,
    in_thread,
    many_events,
    write,
)
from tests.integration.test_export_store import event_store as event_store  # the fixture
from tests.integration.test_export_store import small_windows as small_windows  # the fixture

LAYOUTS = {
    "v2": v2_layout(),
    "v2-extra": v2_layout(extra_columns=True),
    "v1": V1_LAYOUT,
    "v2-unescaped": v2_layout(extra_columns=True, escape_formulas=False),
    "v1-unescaped": v1_layout(escape_formulas=False),
}
NAMES = {P1: "@scope/widget", P2: 'tool "2", v1', "pkg-unknown": "=cmd"}
EVERYTHING = EventQuery(
    OWNER, at(1, 1, 1), datetime.max.replace(tzinfo=UTC), (P1, P2), (X1, X2), {X1: P1}
)

DOUBLES = [
    0.0, -0.0, 1.0, -1.0, 0.5, 45.8696, -119.688, 100.0, 123456789.0, 9999999999.0, 1e10,
    1234567890123.0, 9007199254740993.0, 1e15, 1e16, 1e21, 1e-4, 9.999999999999999e-05, 1e-5,
    1e-6, 1.5e-6, 1e-7, 0.1, 1 / 3, 0.30000000000000004, 5e-324, 2.2250738585072014e-308,
    1.7976931348623157e308, -1.5e300, math.nan, math.inf, -math.inf, None,
]  # fmt: skip
TEXTS = [
    TRICKY_TEXT, "", '"', '""', "'", "'=already", "=1+1", "+x", "-1", "@SUM(A1)", "\tx", "\rx",
    "\r\n", "\n=1", " =1", "é=", "x@y", "a,b", "NULL", "✓", "🚀", None,
]  # fmt: skip
TIMES = [
    at(1, 1, 1),
    at(1969, 12, 31, 23, 59, 59, 999_999),
    at(1970, 1, 1),
    at(2024, 6, 4, 13, 5, 9),
    at(2024, 6, 4, 13, 5, 9, 250_000),
    at(2024, 6, 4, 0, 0, 0, 1),
    at(9999, 12, 31, 23, 59, 59, 999_998),
]


def reference(store: EventStore, query: EventQuery, layout: CsvLayout) -> bytes:
    batches = store.export_batches(query, layout.sources, batch_rows=5)
    return b"".join(csv_lines(batches, layout, NAMES))


def written(store: EventStore, query: EventQuery, layout: CsvLayout, **options: Any) -> bytes:
    return b"".join(store.export_csv(query, layout, NAMES, **options))


def awkward_events(store: EventStore) -> list[dict[str, Any]]:
    """Events that between them hold every awkward value in every column of its type."""
    events = []
    rows = max(len(DOUBLES), len(TEXTS), len(TIMES))
    for i in range(rows):
        text = TEXTS[i % len(TEXTS)]
        if text is not None and not store.capabilities.text_allows_nul:
            text = text.replace("\0", "")
        double = DOUBLES[i % len(DOUBLES)]
        flag = [True, False, None][i % 3]
        events.append(
            ev(
                event_id(i, text),
                TIMES[i % len(TIMES)] - timedelta(days=i % 2 if i % len(TIMES) else 0),
                package_id=[P1, P2, None, "pkg-unknown"][i % 4],
                pixel_id=[None, X1, X2][i % 3],
                type=text,
                version=text,
                referer=text,
                user_agent=text,
                platform=text,
                variables=text,
                origin_id=text,
                endpoint_id=text,
                origin_country=text,
                origin_state=text,
                origin_city=text,
                origin_postal=text,
                origin_connection_type=text,
                origin_company=text,
                origin_domain=text,
                cloud_provider_name=text,
                cloud_provider_domain=text,
                client=text,
                client_version=text,
                client_runtime=text,
                ci=text,
                origin_latitude=double,
                origin_longitude=DOUBLES[(i + 7) % len(DOUBLES)],
                confidence=DOUBLES[(i + 13) % len(DOUBLES)],
                dnt=flag,
                excluded=[None, True, False][i % 3],
                mtc_quota_exceeded=flag,
            )
        )
    if store.capabilities.text_allows_nul:
        events.append(ev("nul", at(2024, 6, 4), package_id=P1, user_agent="a\0b", referer="\0"))
    return events


def event_id(i: int, text: str | None) -> str:
    """The ``i``th awkward event's id: texts, every third a UUID, some the id derived for the
    event's line (DuckDB keeps a canonical UUID as its number and no text for a derived id:
    duckdb_layout.ID_UUID), some of them at the same times as texts."""
    if i % 3 == 0:
        return str(uuid.UUID(int=i * 0x1F3D5B79 << 64 | i))
    if i % 3 == 1:
        return str(uuid.UUID(int=i << 100)).upper() if i % 2 else f"import-1:{i + 1}"
    return f"{text!r}-{i}"


@pytest.fixture(params=["windows", "scattered"])
def csv_store(small_windows: EventStore, request: pytest.FixtureRequest) -> EventStore:
    """The store with small windows; ``scattered``: (where it reads in windows: DuckDB) it
    takes every export's events for scattered over the file, and reads them as one query."""
    if request.param == "scattered":
        monkeypatch = request.getfixturevalue("monkeypatch")
        monkeypatch.setattr(small_windows, "_scattered_seconds", 0, raising=False)
    return small_windows


@pytest.mark.parametrize("layout", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_the_csv_is_the_reference_writers_byte_for_byte(
    csv_store: EventStore, layout: CsvLayout
) -> None:
    store = csv_store
    write(store, OWNER, awkward_events(store), "import-1")
    expected = reference(store, EVERYTHING, layout)
    assert expected.count(b"\n") >= 33  # newlines inside values count too
    assert written(store, EVERYTHING, layout) == expected
    assert written(store, EVERYTHING, layout, chunk_rows=1) == expected


def test_a_line_as_written(event_store: EventStore) -> None:
    """One line spelled out: quoting, NULL against empty, times, doubles, booleans, escapes."""
    event = ev(
        "id-1",
        at(2024, 6, 4, 13, 5, 9, 250_000),
        package_id=P1,
        pixel_id=None,
        version="",
        referer='say "hi"',
        user_agent="=HYPERLINK()",
        variables="a=1&b=2",
        origin_latitude=45.8696,
        origin_longitude=-1e-7,
        confidence=1.0,
        dnt=False,
        mtc_quota_exceeded=None,
        origin_country="DE",
    )
    write(event_store, OWNER, [event], "import-1")
    text = written(event_store, EVERYTHING, v2_layout()).decode()
    assert text == (
        f'"id-1","download","{P1}",,"","2024-06-04T13:05:09.250000Z","say ""hi""",'
        '"\'=HYPERLINK()",,"a=1&b=2",,45.8696,-1e-7,"DE",,,,,,false,1,,,\n'
    )
    v1 = written(event_store, EVERYTHING, V1_LAYOUT).decode()
    assert v1.startswith('"download","\'@scope/widget","","2024-06-04T13:05:09.250000Z",')
    # EVENTPORT_CSV_ESCAPE_FORMULAS=false: as stored, for programs that read the file
    plain = written(event_store, EVERYTHING, v2_layout(escape_formulas=False)).decode()
    assert plain == text.replace("'=HYPERLINK()", "=HYPERLINK()")
    v1 = written(event_store, EVERYTHING, v1_layout(escape_formulas=False)).decode()
    assert v1.startswith('"download","@scope/widget","","2024-06-04T13:05:09.250000Z",')


def test_hex_origin_and_endpoint_ids_come_back_as_written(event_store: EventStore) -> None:
    """The embedded store keeps such ids as the numbers they spell (duckdb_layout._SPELLED):
    both CSV writers give the text back, leading zeros included."""
    origin, endpoint = "00" + "ab" * 15, "0" * 31 + "7"
    event = ev("id-1", at(2024, 6, 4), package_id=P1, origin_id=origin, endpoint_id=endpoint)
    write(event_store, OWNER, [event], "import-1")
    for layout in (v2_layout(), V1_LAYOUT):
        for text in (
            written(event_store, EVERYTHING, layout),
            reference(event_store, EVERYTHING, layout),
        ):
            assert f'"{origin}"'.encode() in text
            assert f'"{endpoint}"'.encode() in text


def test_chunks_hold_whole_lines_in_order(csv_store: EventStore) -> None:
    store = csv_store
    events = many_events(40)
    for i, event in enumerate(events):  # several hours, and one hour with more than a window
        event["time"] = at(2025, 1, 3, i % 3) + timedelta(seconds=i)
    write(store, OWNER, events[::2], "import-1")
    write(store, OWNER, events[1::2], "import-2")
    chunks = list(store.export_csv(EVERYTHING, v2_layout(), chunk_rows=4))
    assert len(chunks) >= 10
    assert all(chunk.endswith(b"\n") and 0 < chunk.count(b"\n") <= 4 for chunk in chunks)
    ids = [line.split(b",", 1)[0] for line in b"".join(chunks).splitlines()]
    by_time = sorted(events, key=lambda e: (e["time"], e["id"]))
    assert ids == [f'"{e["id"]}"'.encode() for e in by_time]
    assert b"".join(chunks) == reference(store, EVERYTHING, v2_layout())


def test_no_artifacts_or_no_events_is_no_lines(event_store: EventStore) -> None:
    assert list(event_store.export_csv(EVERYTHING, v2_layout())) == []
    write(event_store, OWNER, many_events(3), "import-1")
    nothing = EventQuery(OWNER, EVERYTHING.start, EVERYTHING.end)
    assert list(event_store.export_csv(nothing, v2_layout())) == []
    other = EventQuery("someone-else", EVERYTHING.start, EVERYTHING.end, (P1,))
    assert b"".join(event_store.export_csv(other, v2_layout())) == b""


def test_bad_arguments_fail_at_the_call(event_store: EventStore) -> None:
    with pytest.raises(ValueError, match="aware"):
        event_store.export_csv(EventQuery(OWNER, datetime(2025, 1, 1), EVERYTHING.end), V1_LAYOUT)
    with pytest.raises(ValueError, match="positive"):
        event_store.export_csv(EVERYTHING, V1_LAYOUT, chunk_rows=0)


def test_imports_go_on_while_a_csv_streams(event_store: EventStore) -> None:
    write(event_store, OWNER, many_events(200), "import-1")
    stream = event_store.export_csv(EVERYTHING, v2_layout(), chunk_rows=50)
    first = next(stream)
    late = [ev("late", at(2025, 1, 31, 23), package_id=P1), ev("m0000", at(2031, 7, 1))]
    in_thread(lambda: write(event_store, OWNER, late, "import-2"))  # one replaces, one adds
    text = first + b"".join(stream)
    assert [line[1:6] for line in text.splitlines()] == [f"m{i:04d}".encode() for i in range(200)]


def test_closing_a_csv_early_releases_it(event_store: EventStore) -> None:
    big = [{**event, "user_agent": "x" * 200} for event in many_events(20_000)]
    write(event_store, OWNER, big, "import-1")
    for _ in range(6):
        stream = event_store.export_csv(EVERYTHING, v2_layout(), chunk_rows=100)
        assert next(stream).count(b"\n") == 100
        in_thread(stream.close)
    in_thread(lambda: write(event_store, OWNER, many_events(5, at(2025, 1, 4), "n"), "import-2"))
    assert b"".join(event_store.export_csv(EVERYTHING, v2_layout())).count(b"\n") == 20_005


def test_cursors_side_by_side_read_one_snapshot(small_windows: EventStore) -> None:
    """While a writer keeps moving the same events between two days, every export and every
    aggregate (read in windows and parts on several cursors, where the store does) sees each
    event exactly once: all cursors read one snapshot."""
    store = small_windows
    count = 30

    def events(move: int) -> list[dict[str, Any]]:
        day = at(2025, 1, 3) if move % 2 == 0 else at(2025, 1, 5, 20)
        return [
            ev(f"s{i:02d}", day + i * timedelta(minutes=3), package_id=P1) for i in range(count)
        ]

    write(store, OWNER, events(0), "import-0")
    stop = threading.Event()

    def keep_moving() -> None:
        for move in itertools.count(1):
            if stop.wait(0.005):  # a pause, so that readers get the store's lock too
                return
            write(store, OWNER, events(move), f"import-{move}")

    mover = threading.Thread(target=keep_moving, daemon=True)
    mover.start()
    try:
        for _ in range(10):
            text = b"".join(store.export_csv(EVERYTHING, v2_layout()))
            assert sorted(line[1:4] for line in text.splitlines()) == [
                f"s{i:02d}".encode() for i in range(count)
            ]
            daily = store.aggregate(EVERYTHING, "daily", "by-total")
            assert sum(row.total for row in daily) == count
    finally:
        stop.set()
        mover.join(30)
    assert not mover.is_alive()


# -- the property: any values, the reference's bytes --------------------------------------------

texts = st.one_of(
    st.none(),
    st.sampled_from(TEXTS[:-1]),
    # Any text an event can hold: valid UTF-8, so no lone surrogates (imports refuse them).
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\0"), max_size=12),
    st.text(alphabet="=+-@\t\r\n\"', a\0é", max_size=6),
)
doubles = st.one_of(st.none(), st.floats(), st.sampled_from(DOUBLES[:-1]))
flags = st.sampled_from([None, True, False])
moments = st.one_of(
    st.sampled_from(TIMES),
    st.integers(0, 3 * 3600 * 1_000_000).map(lambda n: at(2025, 1, 3) + n * timedelta(0, 0, 1)),
)
counter = itertools.count()
# An event's id: a text, a UUID (canonical, kept by DuckDB as its number; or upper case), or
# the id derived for its line (DERIVED, made by the test; DuckDB keeps no text for it).
DERIVED = "derived"
ids = st.one_of(
    st.integers(0, 99).map(lambda n: f"r{n}"),
    st.uuids().map(str),
    st.uuids().map(lambda u: str(u).upper()),
    st.sampled_from(
        ["00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff"]
    ),
    st.just(DERIVED),
)


@st.composite
def random_events(draw: st.DrawFn, allow_nul: bool) -> list[dict[str, Any]]:
    events = []
    for event_id in draw(st.lists(ids, min_size=1, max_size=25, unique=True)):
        text = {name: draw(texts) for name in ("type", "user_agent", "referer", "origin_city")}
        if not allow_nul:
            text = {k: v.replace("\0", "") if v else v for k, v in text.items()}
        events.append(
            ev(
                event_id,
                draw(moments),
                package_id=draw(st.sampled_from([P1, P2, None])),
                pixel_id=draw(st.sampled_from([None, X1])),
                **text,
                origin_latitude=draw(doubles),
                origin_longitude=draw(doubles),
                confidence=draw(doubles),
                dnt=draw(flags),
                excluded=draw(flags),
            )
        )
    return events


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data(), layout=st.sampled_from(list(LAYOUTS.values())))
def test_random_values_give_the_reference_bytes(
    small_windows: EventStore, data: st.DataObject, layout: CsvLayout
) -> None:
    store = small_windows
    owner = f"csv-owner-{next(counter)}"  # a fresh owner per example: the store is shared
    events = data.draw(random_events(store.capabilities.text_allows_nul))
    for line, event in enumerate(events, start=1):
        if event["id"] == DERIVED:
            event["id"] = f"{owner}-import:{line}"
    write(store, owner, events, f"{owner}-import")
    query = EventQuery(owner, EVERYTHING.start, EVERYTHING.end, (P1, P2), (X1,), {X1: P1})
    assert written(store, query, layout, chunk_rows=3) == reference(store, query, layout)
